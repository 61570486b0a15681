/**
 * Nest 12 ships as ES modules only, and Jest loads ES modules only in its native ESM mode on
 * Node 20 (hence `--experimental-vm-modules` in `npm test`). The TypeScript sources are compiled to
 * ES modules for the tests (tsconfig.spec.json) and to CommonJS for `npm start` and the build,
 * where Node's require(esm) loads Nest.
 *
 * @type {import('jest').Config}
 */
module.exports = {
  moduleFileExtensions: ['js', 'json', 'ts'],
  rootDir: '.',
  roots: ['<rootDir>/libs', '<rootDir>/apps', '<rootDir>/test'],
  testRegex: '.*\\.(spec|e2e-spec)\\.ts$',
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.spec.json', useESM: true }],
  },
  moduleNameMapper: {
    '^nestjs-idempotency/testing$': '<rootDir>/libs/idempotency/src/testing',
    '^nestjs-idempotency/store$': '<rootDir>/libs/idempotency/src/stores',
    '^nestjs-idempotency/(redis|typeorm)$': '<rootDir>/libs/idempotency/src/stores/$1',
    '^nestjs-idempotency/(prometheus|opentelemetry)$':
      '<rootDir>/libs/idempotency/src/observability/$1',
    '^nestjs-idempotency$': '<rootDir>/libs/idempotency/src',
  },
  testEnvironment: 'node',
  collectCoverageFrom: ['libs/**/src/**/*.ts', 'apps/**/src/**/*.ts', '!**/index.ts'],
  testTimeout: 30000,
};
