"use strict";
// A minimal MCP-like stdio server: newline-delimited JSON-RPC 2.0 on stdin/stdout,
// answering `initialize`, `tools/list` and `ping`, like the servers an MCP host starts
// with `npm exec`.  It exists to be leaked, so it does what makes a leak visible:
//
//   MCP_SERVER_MEMORY_MB  hold this many MiB, every page written so they count in RSS
//   MCP_SERVER_LIFETIME   exit on its own after this many seconds (default: never)
//   MCP_SERVER_IGNORE_EOF 1: keep running when stdin closes, as the containerised servers of
//                         the incident did (default: exit, like most servers)
//
// Settings come from the environment, not argv, so the process looks exactly like a
// real server (`node .../bin/magic.js`).

const readline = require("node:readline");

const PROTOCOL_VERSION = "2024-11-05";
const MIB = 1024 * 1024;
const retained = []; // module-level so the garbage collector never frees the held memory

function numberFromEnv(name) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return 0;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    process.stderr.write(`${name} must be a non-negative number, not ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return value;
}

function holdMemory(mebibytes) {
  // allocUnsafe skips zeroing and fill() writes every page, so the kernel really
  // backs them: a calloc'ed buffer would stay unfaulted and invisible in RSS.
  return Buffer.allocUnsafe(Math.round(mebibytes * MIB)).fill(0x5a);
}

function handle(name, request) {
  switch (request.method) {
    case "initialize":
      return {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: { tools: {} },
        serverInfo: { name, version: "0.1.0" },
        // The host only knows its direct child (`npm exec`); this lets it name the server itself.
        _meta: { pid: process.pid },
      };
    case "tools/list":
      return {
        tools: [
          {
            name: `${name}_echo`,
            description: `Echo the input (${name} test server)`,
            inputSchema: { type: "object", properties: { text: { type: "string" } } },
          },
        ],
      };
    case "ping":
      return {};
    default:
      return undefined;
  }
}

function serve(name) {
  retained.push(holdMemory(numberFromEnv("MCP_SERVER_MEMORY_MB")));
  const lifetime = numberFromEnv("MCP_SERVER_LIFETIME");
  if (lifetime > 0) setTimeout(() => process.exit(0), lifetime * 1000);

  const send = (message) => process.stdout.write(JSON.stringify({ jsonrpc: "2.0", ...message }) + "\n");
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on("line", (line) => {
    if (!line.trim()) return;
    let request;
    try {
      request = JSON.parse(line);
    } catch {
      send({ id: null, error: { code: -32700, message: "Parse error" } });
      return;
    }
    if (request.id === undefined) return; // a notification: nothing to answer
    const result = handle(name, request);
    if (result === undefined) {
      send({ id: request.id, error: { code: -32601, message: `Method not found: ${request.method}` } });
    } else {
      send({ id: request.id, result });
    }
  });
  if (process.env.MCP_SERVER_IGNORE_EOF === "1") {
    setInterval(() => {}, 1 << 30); // nothing else keeps the event loop alive once stdin is gone
  } else {
    lines.on("close", () => process.exit(0));
  }
  // As a container's PID 1 a signal without a handler is ignored: end on SIGTERM as elsewhere.
  process.on("SIGTERM", () => process.exit(0));
}

module.exports = { serve };
