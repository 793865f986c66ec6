/**
 * Reads an OpenSSH client config (`~/.ssh/config`, ssh_config(5)) and answers what it says
 * about one host alias, with OpenSSH's rules: the first value obtained for a keyword wins
 * (IdentityFile accumulates), `Host` patterns match the alias as typed, `Match` criteria
 * are evaluated where they appear, `Include` splices files in at that point.
 *
 * Each line is tokenised by the `ssh-config` package (quotes, `=`, trailing comments,
 * multi-value keywords); this module does the line numbering, the block structure, the
 * first-match-wins evaluation and the value checks. Every value leash uses is checked when
 * the file is read, active or not (as OpenSSH does), so a bad line fails at load with
 * `FILE:LINE: problem`; keywords leash does not use are ignored.
 *
 * Not supported, each an {@link SshConfigError} naming the line rather than a silent
 * difference: `Match exec` (it would run a command), `Match canonical|final|tagged|
 * localnetwork|version|sessiontype|command` (leash neither canonicalizes host names nor
 * runs a final pass), `~user/` paths, `${ENV}` and the %-tokens leash does not expand.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import SSHConfigLib, { LineType, type Directive, type Line } from 'ssh-config';
import type { HostKeyPolicy } from './host-key-verifier.ts';
import { wildcardMatch } from './known-hosts.ts';

/** One hop of a ProxyJump list, `[user@]host[:port]`. */
export interface JumpHop {
  readonly host: string;
  readonly user: string | null;
  readonly port: number | null;
}

/** What ssh_config says about one host alias, after OpenSSH's first-match-wins rules. */
export interface SshHostConfig {
  /** What the user typed. */
  readonly alias: string;
  /** HostName (with %h expanded), or the alias. */
  readonly hostName: string;
  readonly user: string | null;
  readonly port: number | null;
  /** Every IdentityFile that applies, in order, with `~` and %-tokens expanded. */
  readonly identityFiles: readonly string[];
  /** ProxyJump's hops in order; null when unset, `none`, or when ProxyCommand came first. */
  readonly proxyJump: readonly JumpHop[] | null;
  /**
   * ProxyCommand as written (not run, not expanded); null when unset, `none`, or when
   * ProxyJump came first. leash cannot honour it: a caller should refuse the host rather
   * than connect directly.
   */
  readonly proxyCommand: string | null;
  /** ConnectTimeout in ms (0: OpenSSH's "no timeout"). */
  readonly connectTimeoutMs: number | null;
  /** ServerAliveInterval in ms (0: off). */
  readonly serverAliveIntervalMs: number | null;
  readonly serverAliveCountMax: number | null;
  /** StrictHostKeyChecking: yes/ask → strict, accept-new → accept-new, no/off → off. */
  readonly strictHostKeyChecking: HostKeyPolicy | null;
  /** UserKnownHostsFile's files (`none` → []), `~` and %-tokens expanded. */
  readonly userKnownHostsFiles: readonly string[] | null;
}

export interface SshConfigOptions {
  /** For `~`, %d and relative Include paths (`<home>/.ssh/`). Default: os.homedir(). */
  readonly home?: string;
  /** For %u, %r's default and `Match localuser|user`. Default: the process's user. */
  readonly localUser?: string;
}

export interface SshConfigLoadOptions extends SshConfigOptions {
  /** A missing file is an error rather than an empty config. Default false. */
  readonly required?: boolean;
}

/** A config file that cannot be read or says something leash cannot use. */
export class SshConfigError extends Error {
  override readonly name = 'SshConfigError';
  readonly file: string;
  /** 1-based; null when the problem is the file as a whole. */
  readonly line: number | null;

  constructor(file: string, line: number | null, problem: string, options?: ErrorOptions) {
    super(line === null ? `${file}: ${problem}` : `${file}:${line}: ${problem}`, options);
    this.file = file;
    this.line = line;
  }
}

/** OpenSSH's READCONF_MAX_DEPTH. */
const MAX_INCLUDE_DEPTH = 16;

/** A `Host` line: the patterns, each possibly negated with `!`. */
interface HostGuard {
  readonly kind: 'host';
  readonly patterns: readonly string[];
}

interface MatchCriterion {
  readonly name: 'host' | 'originalhost' | 'user' | 'localuser';
  readonly negated: boolean;
  /** The comma-separated pattern list. */
  readonly patterns: readonly string[];
}

/** A `Match` line: `all`, or criteria that must all hold. */
interface MatchGuard {
  readonly kind: 'match';
  readonly criteria: readonly MatchCriterion[];
}

type Guard = HostGuard | MatchGuard;

/** A keyword leash uses, its checked value, and the blocks it sits in. */
type Setting =
  | { readonly key: 'hostname' | 'user'; readonly value: string }
  | { readonly key: 'port' | 'serveralivecountmax'; readonly value: number }
  | { readonly key: 'connecttimeout' | 'serveraliveinterval'; readonly value: number }
  | { readonly key: 'stricthostkeychecking'; readonly value: HostKeyPolicy }
  | { readonly key: 'identityfile'; readonly value: string }
  | { readonly key: 'userknownhostsfile'; readonly value: readonly string[] }
  | { readonly key: 'proxyjump'; readonly value: readonly JumpHop[] | null }
  | { readonly key: 'proxycommand'; readonly value: string | null };

type Entry = Setting & {
  readonly file: string;
  readonly line: number;
  /** Every enclosing block (outermost first): the entry applies when all of them match. */
  readonly guards: readonly Guard[];
};

interface Context {
  readonly home: string;
  readonly localUser: string;
  readonly entries: Entry[];
}

export class SshConfig {
  readonly #entries: readonly Entry[];
  readonly #home: string;
  readonly #localUser: string;

  private constructor(context: Context) {
    this.#entries = context.entries;
    this.#home = context.home;
    this.#localUser = context.localUser;
  }

  /**
   * Reads `file` and the files it includes (those synchronously). A missing `file` is an
   * empty config unless `required`; any other read failure is an {@link SshConfigError}.
   */
  static async load(file: string, options: SshConfigLoadOptions = {}): Promise<SshConfig> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if (errnoCode(error) === 'ENOENT' && options.required !== true) return SshConfig.parse('', file, options);
      throw new SshConfigError(file, null, describeReadError(error), { cause: error });
    }
    return SshConfig.parse(text, file, options);
  }

  /** Parses `text` as the contents of `file` (named in errors); Include directives are read from disk. */
  static parse(text: string, file: string, options: SshConfigOptions = {}): SshConfig {
    const context: Context = {
      home: options.home ?? os.homedir(),
      localUser: options.localUser ?? processUser(),
      entries: [],
    };
    readText(context, text, file, [], 0);
    return new SshConfig(context);
  }

  /** What the config says about `alias` (the bare host name as typed, without `user@`). */
  resolve(alias: string): SshHostConfig {
    const verdicts = new Map<Guard, boolean>();
    let hostName: string | null = null;
    let user: string | null = null;
    let port: number | null = null;
    const identityFiles: string[] = [];
    let proxy: Extract<Setting, { key: 'proxyjump' | 'proxycommand' }> | null = null;
    let connectTimeout: number | null = null;
    let aliveInterval: number | null = null;
    let aliveCountMax: number | null = null;
    let strict: HostKeyPolicy | null = null;
    let knownHosts: readonly string[] | null = null;

    const applies = (guards: readonly Guard[]): boolean =>
      guards.every((guard) => {
        // A guard is evaluated once, before any directive of its block is applied (as
        // OpenSSH evaluates it on its own line): Match host sees the HostName set so far.
        let verdict = verdicts.get(guard);
        if (verdict === undefined) {
          verdict =
            guard.kind === 'host'
              ? hostPatternsMatch(guard.patterns, alias)
              : guard.criteria.every((c) => {
                  const subject = {
                    host: hostName === null ? alias : expandHostName(hostName, alias),
                    originalhost: alias,
                    user: user ?? this.#localUser,
                    localuser: this.#localUser,
                  }[c.name];
                  return matchPatternList(c, subject) !== c.negated;
                });
          verdicts.set(guard, verdict);
        }
        return verdict;
      });

    for (const entry of this.#entries) {
      if (!applies(entry.guards)) continue;
      switch (entry.key) {
        case 'hostname':
          hostName ??= entry.value;
          break;
        case 'user':
          user ??= entry.value;
          break;
        case 'port':
          port ??= entry.value;
          break;
        case 'identityfile':
          identityFiles.push(entry.value);
          break;
        case 'proxyjump':
        case 'proxycommand':
          proxy ??= entry;
          break;
        case 'connecttimeout':
          connectTimeout ??= entry.value;
          break;
        case 'serveraliveinterval':
          aliveInterval ??= entry.value;
          break;
        case 'serveralivecountmax':
          aliveCountMax ??= entry.value;
          break;
        case 'stricthostkeychecking':
          strict ??= entry.value;
          break;
        case 'userknownhostsfile':
          knownHosts ??= entry.value;
          break;
      }
    }

    const finalHost = hostName === null ? alias : expandHostName(hostName, alias);
    const tokens: Readonly<Record<string, string>> = {
      '%': '%',
      d: this.#home,
      u: this.#localUser,
      h: finalHost,
      n: alias,
      r: user ?? this.#localUser,
      p: String(port ?? 22),
    };
    const expandPath = (text: string): string => expandTokens(expandTilde(text, this.#home), tokens);

    return {
      alias,
      hostName: finalHost,
      user,
      port,
      identityFiles: identityFiles.map(expandPath),
      proxyJump: proxy?.key === 'proxyjump' ? proxy.value : null,
      proxyCommand: proxy?.key === 'proxycommand' ? proxy.value : null,
      connectTimeoutMs: connectTimeout === null ? null : connectTimeout * 1000,
      serverAliveIntervalMs: aliveInterval === null ? null : aliveInterval * 1000,
      serverAliveCountMax: aliveCountMax,
      strictHostKeyChecking: strict,
      userKnownHostsFiles: knownHosts === null ? null : knownHosts.map(expandPath),
    };
  }
}

/** Reads one file's lines into `context.entries`, every entry under `outer` plus the file's own current block. */
function readText(context: Context, text: string, file: string, outer: readonly Guard[], depth: number): void {
  let guards: readonly Guard[] = outer;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    function fail(problem: string): never {
      throw new SshConfigError(file, lineNo, problem);
    }
    const directive = tokenise(lines[i] ?? '', fail);
    if (directive === null) continue;
    const keyword = directive.param;
    const args = argsOf(directive);
    const key = keyword.toLowerCase();
    if (args.length === 0) fail(`${/^[A-Za-z]+$/.test(keyword) ? keyword : quote(keyword)} needs a value`);

    switch (key) {
      case 'host':
        guards = [...outer, { kind: 'host', patterns: args }];
        continue;
      case 'match':
        guards = [...outer, { kind: 'match', criteria: parseMatch(args, fail) }];
        continue;
      case 'include':
        for (const pattern of args) {
          for (const included of expandInclude(pattern, context.home, fail)) {
            if (depth + 1 > MAX_INCLUDE_DEPTH) fail(`Include nested more than ${MAX_INCLUDE_DEPTH} deep (a file including itself?)`);
            let includedText: string;
            try {
              includedText = readFileSync(included, 'utf8');
            } catch (error) {
              fail(`cannot read included file ${included}: ${describeReadError(error)}`);
            }
            readText(context, includedText, included, guards, depth + 1);
          }
        }
        continue;
    }
    const setting = parseSetting(key, keyword, args, fail);
    if (setting !== null) context.entries.push({ ...setting, file, line: lineNo, guards });
  }
}

/** The one directive on a line, tokenised by ssh-config; null for a blank or comment line. */
function tokenise(text: string, fail: (problem: string) => never): Directive | null {
  let nodes: Line[];
  try {
    nodes = SSHConfigLib.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    if (reason.startsWith('Unexpected line break')) fail('unbalanced quotes or a trailing backslash');
    const missing = /^Missing value for match criteria (.*)$/.exec(reason);
    if (missing !== null) fail(`Match ${quote(missing[1] ?? '')} needs a value`);
    // ssh-config 5.3 throws a TypeError on a multi-value keyword (Host, Match, ...) with no value.
    return fail(error instanceof TypeError ? 'keyword needs a value' : `cannot parse this line: ${reason}`);
  }
  const directive = nodes.find((n): n is Directive => n.type === LineType.DIRECTIVE && n.param !== '');
  if (directive === undefined) {
    // ssh-config drops a line such as `= value` that has no keyword: only blanks and comments may yield nothing.
    const rest = text.trim();
    if (rest !== '' && !rest.startsWith('#')) fail('expected a keyword at the start of the line');
    return null;
  }
  return directive;
}

function argsOf(directive: Directive): string[] {
  if (typeof directive.value === 'string') return directive.value === '' ? [] : [directive.value];
  return directive.value.map((v) => v.val);
}

/** The checked value of a keyword leash uses; null for any other keyword. */
function parseSetting(key: string, keyword: string, args: readonly string[], fail: (problem: string) => never): Setting | null {
  const single = (): string => {
    if (args.length !== 1) fail(`${keyword} takes one value, got ${args.length}`);
    return args[0] ?? '';
  };
  switch (key) {
    case 'hostname': {
      const value = single();
      checkTokens(value, ['%', 'h'], keyword, fail);
      return { key, value };
    }
    case 'user':
      return { key, value: single() };
    case 'port': {
      const value = single();
      const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
      if (!(port >= 1 && port <= 65535)) fail(`bad Port ${quote(value)}: expected a number from 1 to 65535`);
      return { key, value: port };
    }
    case 'connecttimeout':
    case 'serveraliveinterval': {
      const value = single();
      const seconds = parseSeconds(value);
      if (seconds === null) {
        fail(`bad ${keyword} ${quote(value)}: expected seconds, e.g. 10, or a time such as 1m30s (units s, m, h, d, w)`);
      }
      return { key, value: seconds };
    }
    case 'serveralivecountmax': {
      const value = single();
      const count = /^\d{1,9}$/.test(value) ? Number(value) : null;
      if (count === null) fail(`bad ${keyword} ${quote(value)}: expected a whole number, 0 or more`);
      return { key, value: count };
    }
    case 'stricthostkeychecking': {
      const value = single();
      const policy = STRICT_HOST_KEY_CHECKING[value.toLowerCase()];
      if (policy === undefined) {
        fail(`bad ${keyword} ${quote(value)}: expected yes, ask, accept-new, no or off`);
      }
      return { key, value: policy };
    }
    case 'identityfile': {
      const value = single();
      checkPath(value, keyword, fail);
      return { key, value };
    }
    case 'userknownhostsfile': {
      if (args.length === 1 && args[0]?.toLowerCase() === 'none') return { key, value: [] };
      for (const arg of args) checkPath(arg, keyword, fail);
      return { key, value: args };
    }
    case 'proxyjump': {
      const value = single();
      if (value.toLowerCase() === 'none') return { key, value: null };
      return { key, value: value.split(',').map((hop) => parseJumpHop(hop, fail)) };
    }
    case 'proxycommand': {
      // Kept only to report it: ssh-config splits it into words, which are joined back.
      const value = args.join(' ');
      return { key, value: value.toLowerCase() === 'none' ? null : value };
    }
    default:
      return null;
  }
}

const STRICT_HOST_KEY_CHECKING: Readonly<Record<string, HostKeyPolicy>> = {
  yes: 'strict',
  true: 'strict',
  ask: 'strict',
  'accept-new': 'accept-new',
  no: 'off',
  false: 'off',
  off: 'off',
};

/** OpenSSH's convtime: a number of seconds, or a sequence such as `1h30m` (s, m, h, d, w). */
function parseSeconds(text: string): number | null {
  if (!/^(\d+[smhdw]?)+$/i.test(text)) return null;
  const unit: Readonly<Record<string, number>> = { '': 1, s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };
  let total = 0;
  for (const [, amount, suffix] of text.matchAll(/(\d+)([smhdw]?)/gi)) {
    total += Number(amount) * (unit[(suffix ?? '').toLowerCase()] ?? 1);
  }
  // OpenSSH keeps time values in an int; larger is an error there too.
  return total <= 2_147_483_647 ? total : null;
}

/** `[user@]host[:port]`, `[user@][v6addr]:port` or `ssh://[user@]host[:port]`. */
function parseJumpHop(text: string, fail: (problem: string) => never): JumpHop {
  const bad = (why: string): never => fail(`bad ProxyJump hop ${quote(text)}: ${why}`);
  let rest = text.startsWith('ssh://') ? text.slice('ssh://'.length) : text;
  if (text.startsWith('ssh://') && rest.endsWith('/')) rest = rest.slice(0, -1);
  const at = rest.lastIndexOf('@');
  const user = at >= 0 ? rest.slice(0, at) : null;
  if (user === '') bad('empty user name before @');
  rest = rest.slice(at + 1);
  let host: string;
  let portText: string | null = null;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) bad('no ] after [');
    host = rest.slice(1, close);
    const after = rest.slice(close + 1);
    if (after !== '') {
      if (!after.startsWith(':')) bad('expected :port after ]');
      portText = after.slice(1);
    }
  } else {
    const colons = rest.split(':').length - 1;
    // Several colons: a bare IPv6 address without a port.
    const colon = colons === 1 ? rest.indexOf(':') : -1;
    host = colon >= 0 ? rest.slice(0, colon) : rest;
    portText = colon >= 0 ? rest.slice(colon + 1) : null;
  }
  if (host === '' || /[\s/]/.test(host)) bad('expected [user@]host[:port]');
  let port: number | null = null;
  if (portText !== null) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) bad(`bad port ${quote(portText)}: expected a number from 1 to 65535`);
  }
  return { host, user, port };
}

/** A Match line's criteria, refusing the ones leash cannot or will not evaluate. */
function parseMatch(args: readonly string[], fail: (problem: string) => never): MatchCriterion[] {
  const criteria: MatchCriterion[] = [];
  for (let i = 0; i < args.length; i++) {
    const word = args[i] ?? '';
    const negated = word.startsWith('!');
    const name = (negated ? word.slice(1) : word).toLowerCase();
    switch (name) {
      case 'all':
        if (args.length !== 1) fail('Match all cannot be combined with other criteria');
        return [];
      case 'host':
      case 'originalhost':
      case 'user':
      case 'localuser': {
        const list = args[++i];
        if (list === undefined) fail(`Match ${name} needs a value`);
        criteria.push({ name, negated, patterns: list.split(',') });
        break;
      }
      case 'exec':
        fail('Match exec is not supported by leash (it would run a local command)');
        break;
      case 'canonical':
      case 'final':
        fail(`Match ${name} is not supported by leash (leash does not canonicalize host names or make a final pass)`);
        break;
      case 'tagged':
      case 'localnetwork':
      case 'version':
      case 'sessiontype':
      case 'command':
        fail(`Match ${name} is not supported by leash`);
        break;
      default:
        fail(`unknown Match criterion ${quote(word)}`);
    }
  }
  return criteria;
}

/** A `Host` line: no negated pattern matches the alias and some pattern does (case-sensitive, as OpenSSH). */
function hostPatternsMatch(patterns: readonly string[], alias: string): boolean {
  let positive = false;
  for (const pattern of patterns) {
    const negated = pattern.startsWith('!');
    if (wildcardMatch(negated ? pattern.slice(1) : pattern, alias)) {
      if (negated) return false;
      positive = true;
    }
  }
  return positive;
}

/** OpenSSH's match_pattern_list: case-insensitive for host and originalhost (match_hostname), not for users. */
function matchPatternList(criterion: MatchCriterion, subject: string): boolean {
  if (criterion.name === 'user' || criterion.name === 'localuser') return hostPatternsMatch(criterion.patterns, subject);
  return hostPatternsMatch(
    criterion.patterns.map((p) => p.toLowerCase()),
    subject.toLowerCase(),
  );
}

function expandHostName(hostName: string, alias: string): string {
  return expandTokens(hostName, { '%': '%', h: alias });
}

/** Tokens leash expands in IdentityFile and UserKnownHostsFile. */
const PATH_TOKENS = ['%', 'd', 'h', 'n', 'p', 'r', 'u'];

function checkPath(value: string, keyword: string, fail: (problem: string) => never): void {
  if (/^~[^/]/.test(value)) fail(`${keyword} ${quote(value)}: ~user paths are not supported by leash`);
  if (value.includes('${')) fail(`${keyword} ${quote(value)}: environment variables (\${...}) are not supported by leash`);
  checkTokens(value, PATH_TOKENS, keyword, fail);
}

function checkTokens(value: string, allowed: readonly string[], keyword: string, fail: (problem: string) => never): void {
  for (let i = value.indexOf('%'); i >= 0; i = value.indexOf('%', i + 2)) {
    const token = value[i + 1];
    if (token === undefined || !allowed.includes(token)) {
      fail(
        `${keyword} ${quote(value)}: ${token === undefined ? 'a lone % at the end' : `token %${token}`} is not supported ` +
          `(leash expands ${allowed.map((t) => `%${t}`).join(', ')})`,
      );
    }
  }
}

/** Replaces %x tokens (already checked by {@link checkTokens}). */
function expandTokens(value: string, tokens: Readonly<Record<string, string>>): string {
  return value.replace(/%(.)/g, (whole, token: string) => tokens[token] ?? whole);
}

function expandTilde(value: string, home: string): string {
  if (value === '~') return home;
  return value.startsWith('~/') ? path.join(home, value.slice(2)) : value;
}

/** An Include argument's files, sorted as glob(3) returns them; no match is no file, as in OpenSSH. */
function expandInclude(pattern: string, home: string, fail: (problem: string) => never): string[] {
  if (/^~[^/]/.test(pattern)) fail(`Include ${quote(pattern)}: ~user paths are not supported by leash`);
  const expanded = expandTilde(pattern, home);
  // ssh(1) reads a relative Include from ~/.ssh (for a user config).
  const absolute = path.isAbsolute(expanded) ? expanded : path.join(home, '.ssh', expanded);
  const parts = absolute.split(path.sep).filter((p) => p !== '');
  let found = [path.parse(absolute).root];
  for (const part of parts) {
    const next: string[] = [];
    for (const dir of found) {
      if (!/[*?]/.test(part)) {
        next.push(path.join(dir, part));
        continue;
      }
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names.sort()) {
        // glob(3): a wildcard does not match a leading dot.
        if (name.startsWith('.') && !part.startsWith('.')) continue;
        if (wildcardMatch(part, name)) next.push(path.join(dir, name));
      }
    }
    found = next;
  }
  // OpenSSH skips what glob finds but cannot be opened as a config (missing, a directory).
  return found.filter((file) => {
    try {
      return !statSync(file).isDirectory();
    } catch (error) {
      return errnoCode(error) !== 'ENOENT';
    }
  });
}

/**
 * Quotes config text for a one-line message, like service/quote-input.ts's quoteInput
 * (which src/ssh may not import: DESIGN.md "Layers").
 */
function quote(text: string, max = 80): string {
  const shown = text.length > max ? `${text.slice(0, max - 20)}…${text.slice(-19)}` : text;
  return JSON.stringify(shown);
}

function processUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? process.env.LOGNAME ?? '';
  }
}

function errnoCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function describeReadError(error: unknown): string {
  const code = errnoCode(error);
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return 'permission denied (EACCES)';
  if (code === 'EISDIR') return 'is a directory (EISDIR)';
  return code ?? (error instanceof Error ? error.message : String(error));
}
