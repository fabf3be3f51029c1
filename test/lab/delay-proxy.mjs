// Latency for the lab's `slow` fault when the kernel has no sch_netem:
// a TCP proxy that holds every chunk for DELAY_MS in each direction (so +2*DELAY_MS per round trip).
// Usage: node delay-proxy.mjs LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS
import net from "node:net";

const [listenHost, listenPort, targetHost, targetPort, delayMs] = process.argv.slice(-5); // run as a file or with -e
const delay = Number(delayMs);

function pipeDelayed(from, to) {
  from.on("data", (chunk) => {
    setTimeout(() => to.write(chunk), delay);
  });
  from.on("end", () => setTimeout(() => to.end(), delay));
  from.on("error", () => to.destroy());
}

const server = net.createServer((client) => {
  const upstream = net.connect(Number(targetPort), targetHost);
  // Connection setup pays one delayed round trip too.
  client.pause();
  setTimeout(() => client.resume(), 2 * delay);
  pipeDelayed(client, upstream);
  pipeDelayed(upstream, client);
  client.on("close", () => upstream.destroy());
  upstream.on("close", () => setTimeout(() => client.destroy(), delay));
});
server.listen(Number(listenPort), listenHost);
