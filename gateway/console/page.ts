/**
 * The console's one HTML page. No inline script or style (the CSP forbids
 * them): the app is /ui/assets/app.js and /ui/assets/app.css, built by
 * `npm run build` (gateway/console/build-assets.ts).
 */
export const CONSOLE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mayfly console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/assets/app.css">
<script type="module" src="/ui/assets/app.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <span class="brand">Mayfly</span>
  <nav id="nav" aria-label="Pages" hidden>
    <a href="#/functions">Functions</a>
    <a href="#/invoke">Invoke</a>
    <a href="#/calls">Calls</a>
    <a href="#/hosts">Hosts and VMs</a>
    <a href="#/secrets">Secrets and tokens</a>
  </nav>
  <span id="who" class="who"></span>
</header>
<main id="main" tabindex="-1"><noscript>The Mayfly console needs JavaScript.</noscript></main>
<div id="toast" role="status" aria-live="polite"></div>
</body>
</html>
`;

/** Strict: only this origin's scripts, styles, images and fetches; no inline code, no framing. */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');
