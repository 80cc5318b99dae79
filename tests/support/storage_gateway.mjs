// The hosted gateway's part the listener meets: HTTPS, and Storage under /storage/v1.
// usage: node storage_gateway.mjs CERT_FILE KEY_FILE UPSTREAM_PORT
// Prints {"port": N} once it listens on 127.0.0.1; ends when its stdin closes.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

const [certFile, keyFile, upstreamPort] = process.argv.slice(2);
const PREFIX = '/storage/v1';
// Hop-by-hop headers are the gateway's own; `expect` is answered here, not passed on.
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'expect']);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function forwardable(headers) {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP.has(name)));
}

const server = https.createServer(
  { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) },
  (req, res) => {
    if (req.url !== PREFIX && !req.url.startsWith(`${PREFIX}/`)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not under /storage/v1\n');
      return;
    }
    let answered = false;
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
        // A refusal may come before the body is all sent (413): the rest is read and dropped,
        // so that the client reads the answer rather than a broken connection.
        answered = true;
        req.unpipe(upstream);
        req.resume();
        res.writeHead(answer.statusCode, forwardable(answer.headers));
        answer.pipe(res);
        answer.on('end', () => {
          if (!req.complete) upstream.destroy();
        });
      },
    );
    upstream.on('error', () => {
      // The server may close its end right after answering: its answer is read first.
      setTimeout(() => {
        if (answered) return;
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end();
      }, 200);
    });
    req.on('error', () => upstream.destroy());
    req.pipe(upstream);
  },
);

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
