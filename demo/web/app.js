// The demo page's script: calls /demo.Greeter through grelay with gRPC-Web
// (npm's grpc-web runtime, text mode) and shows the answers. Messages are
// UTF-8 text, as the demo backend speaks them.
import { GrpcWebClientBase, MethodDescriptor, MethodType } from 'grpc-web';

const enc = new TextEncoder();
const dec = new TextDecoder();
const api = document.body.dataset.api || `http://${location.hostname}:8080`;
const client = new GrpcWebClientBase({ format: 'text' });
const same = (x) => x;
const method = (name, type) =>
  new MethodDescriptor(`/demo.Greeter/${name}`, type, Uint8Array, Uint8Array, same, same);
const list = document.getElementById('answers');

function show(text, cls) {
  const li = document.createElement('li');
  li.textContent = text;
  if (cls) li.className = cls;
  list.appendChild(li);
}

function sayHello(name) {
  return new Promise((resolve) => {
    let backend = '?';
    const call = client.rpcCall(`${api}/demo.Greeter/SayHello`, enc.encode(name), {},
      method('SayHello', MethodType.UNARY), (err, resp) => {
        if (err) show(`SayHello failed: ${err.code} ${err.message}`, 'error');
        else show(`unary: ${dec.decode(resp)}`, 'answer');
        resolve();
      });
    call.on('metadata', (m) => { backend = m['x-backend'] || backend; });
  });
}

function streamGreetings(name) {
  return new Promise((resolve) => {
    const stream = client.serverStreaming(`${api}/demo.Greeter/StreamGreetings`, enc.encode(name), {},
      method('StreamGreetings', MethodType.SERVER_STREAMING));
    stream.on('data', (msg) => show(`stream: ${dec.decode(msg)}`, 'answer'));
    stream.on('error', (err) => { show(`stream failed: ${err.code} ${err.message}`, 'error'); resolve(); });
    stream.on('end', resolve);
  });
}

document.getElementById('hello').onclick = () => sayHello(document.getElementById('name').value);
document.getElementById('stream').onclick = () => streamGreetings(document.getElementById('name').value);

// One round on load, so the page shows gRPC-Web at work right away.
(async () => {
  for (let i = 0; i < 3; i++) await sayHello('browser');
  await streamGreetings('browser');
  document.getElementById('state').textContent = 'done';
})();
