#!/usr/bin/env node
"use strict";
// A leaky MCP host, like MetaMCP: it starts the stdio servers of this package with
// `npm exec --yes --package=file:<this dir> -- <server>` (or, with --launcher docker, as
// containers: `docker run -i --rm ... IMAGE node /pkg/bin/<server>.js`, this directory
// mounted at /pkg), keeps their stdin/stdout pipes open, and (depending on the mode) never
// cleans them up.  Plain node, no dependencies, so the very same supervisor runs on a host
// and in a minimal busybox+node container.
//
// Output: one JSON object per line on stdout (kinds: simulate, spawn, up, kill, hangup,
// exit, stop, error, declared for Python in spawnwatch/simulate.py); diagnostics on stderr.
// Exit status 0 after a clean stop, 1 on failure, 2 on bad usage.
//
// Cleanup: every child is started in its own process group (detached: setsid), which its
// `sh -c` and node server grandchildren stay in, so on SIGINT, SIGTERM or --duration the
// supervisor signals whole groups and reaches the orphans of killed children too.
// Zombies of the zombie mode are reaped by whoever inherits them when the supervisor
// exits (init, a subreaper such as `spawnwatch simulate`, or the container's end).

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const readline = require("node:readline");
const { parseArgs } = require("node:util");

const PACKAGE_DIR = __dirname;
const SERVERS = Object.keys(require("./package.json").bin);
const MODES = {
  accumulate: "start one child every INTERVAL seconds, never end any",
  orphan: "start one child every INTERVAL seconds, SIGKILL only its `npm exec` (or `docker run`) when its session ends, SESSION seconds after the server answered: the server grandchild (or container, its server ignoring the end of stdin) lives on",
  zombie: "start one child every INTERVAL seconds; each exits after LIFETIME seconds and is never waited for",
  pool: "healthy: keep a fixed pool of CHILDREN workers for the whole run",
  respawn: "healthy: keep CHILDREN workers alive, each living LIFETIME to 3*LIFETIME seconds and replaced when it exits",
};
const LAUNCHERS = ["npm", "docker"];
const INITIALIZE_ID = 1;
// An MCP session lasts a while before the host closes it; a launcher that exited as soon
// as its server started would be a daemon's hand-off (double fork), not this leak.
const SESSION_S = 2;
const CONTAINER_PACKAGE_DIR = "/pkg";
const STOP_GRACE_MS = 3000;
const KILL_WAIT_MS = 2000;
// Quiet, offline-friendly npm: no update check, audit or funding messages.
const NPM_ENV = {
  npm_config_update_notifier: "false",
  npm_config_audit: "false",
  npm_config_fund: "false",
  npm_config_prefer_offline: "true",
};

const USAGE = `usage: node supervisor.js MODE [options]

modes:
${Object.entries(MODES)
  .map(([name, text]) => `  ${name.padEnd(11)} ${text}`)
  .join("\n")}

options:
  --interval S    seconds between spawns, counted from the first server's answer (default 2)
  --servers K     cycle through the first K of: ${SERVERS.join(", ")} (default 1)
  --memory MB     MiB each server holds, every page touched (default 20)
  --children N    pool size for pool and respawn (default 8 for pool, 6 for respawn)
  --lifetime S    how long zombie and respawn children live (default 1)
  --max N         stop spawning after N children in the leak modes, a safety cap (default 40)
  --linger S      orphan mode: close an orphaned server's stdin S seconds after its \`npm exec\` was
                  killed, so the server exits on EOF and waits to be reaped by its adopter
                  (default: never, as in the incident: the host kept the pipe)
  --duration S    stop (and clean up) after S seconds (default: until SIGINT or SIGTERM)
  --session S     how long an orphan-mode session lasts before its launcher is killed (default ${SESSION_S})
  --launcher L    how servers start: npm (npm exec) or docker (docker run -i --rm, default npm)
  --image I       the image docker runs (it needs node); required with --launcher docker
  --docker-arg A  one more option for docker run, e.g. --docker-arg=--network=none (repeatable)
`;

function usageError(message) {
  process.stderr.write(`supervisor: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function numberOption(values, name, fallback, { integer = false, min = 0, minOpen = false } = {}) {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  const tooSmall = minOpen ? value <= min : value < min;
  if (!Number.isFinite(value) || tooSmall || (integer && !Number.isInteger(value))) {
    usageError(`--${name} must be ${integer ? "an integer" : "a number"} ${minOpen ? ">" : ">="} ${min}, not ${raw}`);
  }
  return value;
}

function parseOptions(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        ...Object.fromEntries(
          ["interval", "servers", "memory", "children", "lifetime", "max", "duration", "linger", "session", "launcher",
           "image"].map((name) => [name, { type: "string" }]),
        ),
        "docker-arg": { type: "string", multiple: true },
      },
    });
  } catch (error) {
    usageError(error.message);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1 || !(positionals[0] in MODES)) {
    usageError(`expected one mode out of ${Object.keys(MODES).join(", ")}`);
  }
  const mode = positionals[0];
  const serverCount = numberOption(values, "servers", 1, { integer: true, min: 1 });
  if (serverCount > SERVERS.length) usageError(`--servers is at most ${SERVERS.length}`);
  const launcher = values.launcher ?? "npm";
  if (!LAUNCHERS.includes(launcher)) usageError(`--launcher is one of ${LAUNCHERS.join(", ")}, not ${launcher}`);
  if ((launcher === "docker") !== (values.image !== undefined)) usageError("--image goes with --launcher docker");
  return {
    mode,
    interval: numberOption(values, "interval", 2, { min: 0, minOpen: true }),
    servers: SERVERS.slice(0, serverCount),
    memoryMb: numberOption(values, "memory", 20),
    children: numberOption(values, "children", mode === "pool" ? 8 : 6, { integer: true, min: 1 }),
    lifetime: numberOption(values, "lifetime", 1, { min: 0, minOpen: true }),
    max: numberOption(values, "max", 40, { integer: true, min: 1 }),
    duration: numberOption(values, "duration", null, { min: 0, minOpen: true }),
    linger: numberOption(values, "linger", null, { min: 0 }),
    session: numberOption(values, "session", SESSION_S, { min: 0, minOpen: true }),
    launcher,
    image: values.image ?? null,
    dockerArgs: values["docker-arg"] ?? [],
  };
}

// Seconds since boot, the clock of spawnwatch's events (/proc/uptime is CLOCK_BOOTTIME).
function uptime() {
  return Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]);
}

function emit(record) {
  process.stdout.write(JSON.stringify({ kind: record.kind, time: uptime(), ...record }) + "\n");
}

// Members of the given process groups that are still running (zombies excluded: they
// are dead, and the zombie mode's own zombies only go away when this process exits).
function runningMembers(groups) {
  const running = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited while we looked
    }
    // comm may hold spaces and parentheses: fields resume after the last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (state !== "Z" && groups.has(Number(pgrp))) running.push(Number(entry));
  }
  return running;
}

function signalGroups(groups, signal) {
  for (const group of groups) {
    try {
      process.kill(-group, signal);
    } catch (error) {
      if (error.code !== "ESRCH") throw error;
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntilGone(groups, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (runningMembers(groups).length > 0 && Date.now() < deadline) await sleep(100);
  return runningMembers(groups);
}

class Supervisor {
  constructor(options) {
    this.options = options;
    this.children = new Map(); // pid (= process group) -> child; bounded by --max or --children
    this.spawned = 0;
    this.ticker = null;
    this.stopping = false;
  }

  get leaky() {
    return !["pool", "respawn"].includes(this.options.mode);
  }

  start() {
    const { mode, interval, servers, memoryMb, children, lifetime, max, duration, linger, launcher, image } = this.options;
    emit({
      kind: "simulate",
      pid: process.pid,
      mode,
      interval,
      servers,
      memory_mb: memoryMb,
      children: this.leaky ? null : children,
      lifetime: ["zombie", "respawn"].includes(mode) ? lifetime : null,
      max: this.leaky ? max : null,
      linger: mode === "orphan" ? linger : null,
      duration,
      package: PACKAGE_DIR,
      launcher,
      image,
    });
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => this.stop(signal));
    process.stdout.on("error", () => this.stop("stdout closed"));
    if (duration !== null) setTimeout(() => this.stop("duration"), duration * 1000);
    // The first child installs the package into npm's npx cache; later ones start only
    // once it answered, so concurrent first installs never race.
    this.spawnNext();
  }

  wanted() {
    return this.leaky ? this.spawned < this.options.max : this.children.size < this.options.children;
  }

  spawnNext() {
    if (this.stopping || !this.wanted()) return;
    const { servers } = this.options;
    this.spawnChild(servers[this.spawned % servers.length]);
  }

  lifetimeOfNextChild() {
    const { mode, lifetime } = this.options;
    if (mode === "zombie") return lifetime;
    if (mode === "respawn") return lifetime * (1 + 2 * Math.random());
    return null;
  }

  // The launcher's argv and the environment of the server.
  command(server) {
    const { mode, memoryMb, launcher, image, dockerArgs } = this.options;
    const serverEnv = { MCP_SERVER_MEMORY_MB: String(memoryMb) };
    const lifetime = this.lifetimeOfNextChild();
    if (lifetime !== null) serverEnv.MCP_SERVER_LIFETIME = lifetime.toFixed(3);
    if (launcher === "npm") {
      const args = ["exec", "--yes", `--package=file:${PACKAGE_DIR}`, "--", server];
      return { argv: ["npm", ...args], env: { ...process.env, ...NPM_ENV, ...serverEnv } };
    }
    // A killed `docker run` closes its container's stdin: the server must ignore that to live on.
    if (mode === "orphan") serverEnv.MCP_SERVER_IGNORE_EOF = "1";
    const envArgs = Object.entries(serverEnv).flatMap(([name, value]) => ["-e", `${name}=${value}`]);
    const argv = ["docker", "run", "-i", "--rm", ...dockerArgs, "-v", `${PACKAGE_DIR}:${CONTAINER_PACKAGE_DIR}:ro`,
      ...envArgs, image, "node", `${CONTAINER_PACKAGE_DIR}/bin/${server}.js`];
    return { argv, env: process.env };
  }

  spawnChild(server) {
    const { mode } = this.options;
    const { argv, env } = this.command(server);
    const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "inherit"], detached: true, env });
    if (child.pid === undefined) {
      child.on("error", (error) => this.fail(`cannot start ${argv[0]}: ${error.message}`));
      return;
    }
    this.spawned += 1;
    const entry = { pid: child.pid, server, spawnedAt: Date.now(), serverPid: null, input: child.stdin };
    this.children.set(child.pid, entry);
    emit({ kind: "spawn", pid: child.pid, server, argv });

    // A write to a child that already died is not the supervisor's failure.
    entry.input.on("error", () => {});
    if (mode === "orphan") {
      // Node destroys child.stdin when the child exits.  The host in the incident kept
      // the pipe, so the orphaned server never read EOF: hold our own reference instead.
      child.stdin = null;
    }
    if (mode === "zombie") {
      // libuv reaps only the children whose process handle is open (it calls waitpid()
      // per known pid).  Closing the handle makes it forget this pid: when the child
      // exits nobody waits for it, and it stays a zombie child of this process.
      child._handle.close();
      child._handle = null;
    } else {
      child.on("exit", (code, signal) => this.onExit(entry, { code, signal, reaped: true }));
    }
    child.stdout.on("end", () => {
      if (mode === "zombie") this.onExit(entry, { code: null, signal: null, reaped: false });
    });
    readline.createInterface({ input: child.stdout, crlfDelay: Infinity }).on("line", (line) => {
      this.onMessage(entry, line);
    });
    this.send(entry, { id: INITIALIZE_ID, method: "initialize", params: initializeParams() });
  }

  send(entry, message) {
    entry.input.write(JSON.stringify({ jsonrpc: "2.0", ...message }) + "\n");
  }

  onMessage(entry, line) {
    let message;
    try {
      message = JSON.parse(line);
    } catch {
      return; // not JSON-RPC: a server's stray output
    }
    if (message.id !== INITIALIZE_ID || entry.serverPid !== null || !message.result) return;
    entry.serverPid = message.result._meta?.pid ?? null;
    this.send(entry, { method: "notifications/initialized" });
    emit({
      kind: "up",
      pid: entry.pid,
      server: entry.server,
      server_pid: entry.serverPid,
      startup_seconds: (Date.now() - entry.spawnedAt) / 1000,
    });
    if (this.options.mode === "orphan") {
      setTimeout(() => {
        if (this.stopping) return; // stop() ends the whole group
        process.kill(entry.pid, "SIGKILL");
        emit({ kind: "kill", pid: entry.pid, signal: "SIGKILL", orphaned: [entry.serverPid] });
        if (this.options.linger !== null) setTimeout(() => this.hangUp(entry), this.options.linger * 1000);
      }, this.options.session * 1000);
    }
    if (this.ticker === null && !this.stopping) {
      this.ticker = setInterval(() => this.spawnNext(), this.options.interval * 1000);
    }
  }

  // The orphaned server reads EOF and exits: its adopter, not this process, has to reap it.
  hangUp(entry) {
    if (this.stopping) return;
    entry.input.end();
    emit({ kind: "hangup", pid: entry.pid, server_pid: entry.serverPid });
  }

  onExit(entry, { code, signal, reaped }) {
    emit({ kind: "exit", pid: entry.pid, server: entry.server, code, signal, reaped });
    if (this.stopping) return;
    if (entry.serverPid === null) {
      this.fail(`the ${this.options.launcher} launcher of ${entry.server} (pid ${entry.pid}) ended before its server answered`);
      return;
    }
    if (this.options.mode === "respawn") {
      // Its group is empty now (npm exec outlives its server): nothing left to clean up.
      this.children.delete(entry.pid);
      this.spawnChild(entry.server);
    }
  }

  fail(message) {
    emit({ kind: "error", message });
    process.stderr.write(`supervisor: ${message}\n`);
    this.stop("error", 1);
  }

  async stop(reason, exitCode = 0) {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.ticker);
    const groups = new Set(this.children.keys());
    emit({ kind: "stop", reason, spawned: this.spawned });
    signalGroups(groups, "SIGTERM");
    let survivors = await waitUntilGone(groups, STOP_GRACE_MS);
    if (survivors.length > 0) {
      signalGroups(groups, "SIGKILL");
      survivors = await waitUntilGone(groups, KILL_WAIT_MS);
    }
    if (survivors.length > 0) {
      process.stderr.write(`supervisor: still running after SIGKILL: ${survivors.join(" ")}\n`);
      exitCode = 1;
    }
    process.exit(exitCode);
  }
}

function initializeParams() {
  return {
    protocolVersion: "2024-11-05",
    capabilities: {},
    clientInfo: { name: "spawnwatch-supervisor", version: "0.1.0" },
  };
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(USAGE);
  } else {
    new Supervisor(parseOptions(argv)).start();
  }
}
