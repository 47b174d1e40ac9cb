// gRPC-Web calls from a real browser through grelay, with npm's grpc-web
// runtime. Payloads are raw bytes (the test backend echoes bytes), so the
// serializers are the identity. Bundled by esbuild into page/bundle.js.
import { GrpcWebClientBase, MethodDescriptor, MethodType } from 'grpc-web';

const enc = new TextEncoder();
const dec = new TextDecoder();
const same = (x) => x;
const desc = (path, type) => new MethodDescriptor(path, type, Uint8Array, Uint8Array, same, same);
const errOf = (e) => (e ? { code: e.code, message: e.message } : null);

function unary(client, api, path, bytes, md) {
  return new Promise((resolve) => {
    let headers = {};
    const call = client.rpcCall(api + path, bytes, md || {}, desc(path, MethodType.UNARY), (err, resp) =>
      resolve({ err: errOf(err), resp, headers }));
    call.on('metadata', (m) => { headers = m; });
  });
}

// Resolves when the first message arrives, while the server holds the
// stream open: only an incremental proxy gets here. Then cancels.
function firstThenCancel(client, api, id) {
  return new Promise((resolve) => {
    const path = '/test.Echo/ServerStream';
    const req = enc.encode(JSON.stringify({ count: 3, size: 8, hold: true, id }));
    const stream = client.serverStreaming(api + path, req, {}, desc(path, MethodType.SERVER_STREAMING));
    let ended = false;
    stream.on('end', () => { ended = true; });
    stream.on('error', (e) => resolve({ err: errOf(e) }));
    stream.on('data', (msg) => {
      const first = dec.decode(msg);
      stream.cancel();
      resolve({ first, endedBeforeFirst: ended });
    });
  });
}

function streamAll(client, api, count, size) {
  return new Promise((resolve) => {
    const path = '/test.Echo/ServerStream';
    const req = enc.encode(JSON.stringify({ count, size }));
    const stream = client.serverStreaming(api + path, req, {}, desc(path, MethodType.SERVER_STREAMING));
    const sizes = [];
    let status = null;
    stream.on('data', (msg) => sizes.push(msg.length));
    stream.on('status', (s) => { status = { code: s.code, details: s.details }; });
    stream.on('error', (e) => resolve({ sizes, err: errOf(e) }));
    stream.on('end', () => resolve({ sizes, status }));
  });
}

window.runAll = async (api) => {
  const text = new GrpcWebClientBase({ format: 'text' });
  const binary = new GrpcWebClientBase({ format: 'binary' });
  const out = {};
  const md = { 'x-custom-req': 'from-the-browser' };
  let r = await unary(text, api, '/test.Echo/Unary', enc.encode('hello from chromium (text)'), md);
  out.unaryText = { err: r.err, resp: r.resp && dec.decode(r.resp), custom: r.headers['x-custom-req'] || null,
                    backend: r.headers['x-backend'] || null };
  r = await unary(binary, api, '/test.Echo/Unary', enc.encode('hello from chromium (binary)'), md);
  out.unaryBinary = { err: r.err, resp: r.resp && dec.decode(r.resp), custom: r.headers['x-custom-req'] || null };
  r = await unary(text, api, '/test.Echo/Unary', enc.encode('caf\u00e9 is closed \u2013 100%'),
                  { 'x-fail-code': 'NOT_FOUND' });
  out.error = r.err;
  out.stream = await streamAll(text, api, 5, 100);
  out.incremental = await firstThenCancel(text, api, 'browser-incremental');
  out.big = await streamAll(text, api, 1, 1024 * 1024);
  r = await unary(text, api, '/test.Echo/Unary', enc.encode('x'),
                  { 'x-hold': 'browser-deadline', deadline: String(Date.now() + 3000) });
  out.deadline = r.err;
  return out;
};

window.runDenied = async (api) => {
  const text = new GrpcWebClientBase({ format: 'text' });
  const r = await unary(text, api, '/test.Echo/Unary', enc.encode('x'), { 'x-custom-req': 'y' });
  return { err: r.err, resp: r.resp ? dec.decode(r.resp) : null };
};

document.getElementById('state').textContent = 'ready';
