import v8 from 'node:v8';
import vm from 'node:vm';

/** `global.gc` without starting node with --expose-gc, for heap-growth assertions. */
export function collector(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}
