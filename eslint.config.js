// Lint rules that guard the project's promises: no floating promises (every wait is
// awaited or handled), no import cycles, and imports that only point down the layers of
// ../shared/DESIGN.md: cli → app → api → service → store → ssh → lifecycle; diagnostics
// reads lifecycle and is read by the layers above it. app/ is the one composition root
// (STYLE.md "one place wires everything together"), called by cli.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

/** Each layer and the layers it must never import (everything above it). */
const LAYERS = {
  lifecycle: ['cli', 'app', 'api', 'service', 'store', 'ssh', 'diagnostics'],
  diagnostics: ['cli', 'app', 'api', 'service', 'store', 'ssh'],
  ssh: ['cli', 'app', 'api', 'service', 'store', 'diagnostics'],
  store: ['cli', 'app', 'api', 'service', 'diagnostics'],
  service: ['cli', 'api', 'app'],
  api: ['cli', 'app'],
  app: ['cli'],
};

export default tseslint.config(
  { ignores: ['node_modules/**', 'data/**', 'bench/out/**', 'bench/peers/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test's test()/describe() promises are awaited by the runner itself.
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] }] },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'import-x/no-cycle': 'error',
      'import-x/no-restricted-paths': [
        'error',
        {
          zones: Object.entries(LAYERS).map(([layer, above]) => ({
            target: `./src/${layer}`,
            from: above.map((a) => `./src/${a}`),
            message: `src/${layer} must not import a layer above it (see DESIGN.md "Layers").`,
          })),
        },
      ],
    },
    settings: { 'import-x/resolver': { node: { extensions: ['.ts', '.js'] } } },
  },
  {
    // Tests read untyped JSON off the wire (API responses, events): `any` there is the point.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    files: ['**/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: 'readonly', console: 'readonly' },
    },
  },
);
