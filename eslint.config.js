// ESLint flat config: @eslint/js and typescript-eslint's recommended rules (not the
// type-aware set: this stays fast enough to run on every `npm test`) over src/, test/,
// bench/, bin/, scripts/ and native/'s build script. Build output and data stay out.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['dist/', 'build/', 'node_modules/', '.data/', '.tap/', 'bench/out/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      // `_`, `_name`: deliberately unused (a for-await that only drains, a skipped argument).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      // `const self = this` where a callback gets its own `this` (prom-client's collect(), an
      // object literal's async iterator) and still needs the enclosing instance.
      '@typescript-eslint/no-this-alias': ['error', { allowedNames: ['self'] }],
    },
  },
  {
    // The plain .js/.mjs files run on Node: its globals (no-undef is off for .ts, where
    // TypeScript checks names itself).
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
