// The hosted gateway's part the listener meets: HTTPS, and Storage under /storage/v1.
// usage: node storage_gateway.mjs CERT_FILE KEY_FILE UPSTREAM_PORT
// Prints {"port": N} once it listens on 127.0.0.1; ends when its stdin closes.
//
// Like nginx's default (proxy_request_buffering), it reads a request's whole body before
// passing it on: the client's connection then never breaks under a body the server did not
// want (the server answers a refusal, 413 say, before it reads the body, then closes).
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

const [certFile, keyFile, upstreamPort] = process.argv.slice(2);
const PREFIX = '/storage/v1';
// Hop-by-hop headers are the gateway's own; `expect` is answered here, not passed on.
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'expect']);
// A connection per request: the server closes one after a refusal, and a reused one would break.
const agent = new http.Agent({ keepAlive: false });

function forwardable(headers) {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP.has(name)));
}

function forward(req, res, body) {
  const upstream = http.request(
    {
      host: '127.0.0.1',
      port: Number(upstreamPort),
      method: req.method,
      path: req.url.slice(PREFIX.length) || '/',
      headers: forwardable(req.headers),
      agent,
    },
    (answer) => {
      res.writeHead(answer.statusCode, forwardable(answer.headers));
      answer.pipe(res);
    },
  );
  upstream.on('error', () => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end();
  });
  upstream.end(body);
}

const server = https.createServer(
  { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) },
  (req, res) => {
    if (req.url !== PREFIX && !req.url.startsWith(`${PREFIX}/`)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not under /storage/v1\n');
      return;
    }
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => forward(req, res, Buffer.concat(chunks)));
  },
);

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
