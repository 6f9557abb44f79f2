import { defineConfig } from 'vitest/config';
import preact from '@preact/preset-vite';

// The dashboard is served by `tally serve` at `/`; during development
// `npm run dev` proxies the API to a server on 127.0.0.1:4318.
export default defineConfig({
  plugins: [preact({ devtoolsInProd: false, prefreshEnabled: false })],
  build: {
    target: 'es2022',
    sourcemap: false,
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:4318',
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
  },
});
