"""Real daemons of the healthy corpus, each private: own temp directory, own config,
listening on 127.0.0.1 or a unix socket, stopped (and its files removed) on exit.

Each daemon is a context manager; its `load(stop)` method works it from threads of
this process until `stop` is set (clients as threads, not child processes: a test
that kept spawning identical long-lived clients would be a leak itself).
"""

from __future__ import annotations

import glob
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

from conftest import wait_for

HERE = Path(__file__).resolve().parent
Connection = TypeVar("Connection", http.client.HTTPConnection, socket.socket)
POOL_SIZE = 16  # PostgreSQL connections, one more a second
SSH_SESSIONS = 12  # opened one by one
HTTP_CONNECTIONS = 24  # keep-alive connections held open: one busy Apache worker each
MANAGED_POOL = 12  # processes a process manager (circus, supervisord) grows its pool to, one every 2 s
PER_CONNECTION = 12  # xinetd connections, one per-connection service each, opened one by one
IMAP_SESSIONS = 15  # Dovecot logins held at once, one `imap` process each


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_dir(prefix: str, owner: str | None = None) -> Path:
    """A temp directory the daemon's own user can enter (pytest's are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=f"spawnwatch-{prefix}-"))
    path.chmod(0o755)
    if owner is not None:
        shutil.chown(path, owner, owner)
    return path


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch_detached(argv: list[str]) -> int:
    """Start `argv` the way a daemon starts (fork, setsid, fork, exit): its pid.

    Clients started straight from the test would be identical long-lived children of
    one spawner, which is exactly what `accumulating` reports."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the intermediate: hands the client off and exits
        try:
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.execvp(argv[0], argv)
            os.write(write_end, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        grandchild = int(pipe.read())
    os.waitpid(pid, 0)
    return grandchild


def children(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def hold_connections(stop: threading.Event, period_s: float, most: int, connect: Callable[[], Connection],
                     use: Callable[[Connection], object], server: subprocess.Popen) -> int:
    """Until `stop`: a connection more every `period_s` up to `most`, each used every period and
    held open; then all closed.  The most children `server` had at once."""
    connections: list[Connection] = []
    peak = 0
    try:
        while not stop.wait(period_s):
            if len(connections) < most:
                connections.append(connect())
            for connection in connections:
                use(connection)
            peak = max(peak, len(children(server.pid)))
    finally:
        for connection in connections:
            connection.close()
    return peak


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


class Postgres:
    """A private PostgreSQL cluster (Debian's postgresql), unix socket only, run as user postgres."""

    def __init__(self) -> None:
        [self.bin] = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:] or [None]

    def __enter__(self) -> "Postgres":
        self.dir = private_dir("pg", owner="postgres")
        self.data = self.dir / "data"
        self._as_postgres(f"{self.bin}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self._as_postgres(
            f"{self.bin}/pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start",
            "-o", f"-k {self.dir} -c listen_addresses='' -c max_connections={POOL_SIZE + 10}",
        )
        return self

    def _as_postgres(self, *argv: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv[0]} failed: {done.stderr.strip()[-1000:]}"

    def load(self, stop: threading.Event) -> None:
        """The pool grows one connection a second to POOL_SIZE; each keeps the server busy."""
        import psycopg2

        def client() -> None:
            connection = psycopg2.connect(host=str(self.dir), user="postgres", dbname="postgres")
            try:
                with connection.cursor() as cursor:
                    while not stop.is_set():
                        cursor.execute("SELECT pg_sleep(0.5), count(*) FROM generate_series(1, 20000)")
                        cursor.fetchall()
            finally:
                connection.close()

        threads = []
        self.peak_backends = 0
        while not stop.wait(1.0):
            if len(threads) < POOL_SIZE:
                threads.append(threading.Thread(target=client, daemon=True))
                threads[-1].start()
            self.peak_backends = max(self.peak_backends, len(self._backends()))
        for thread in threads:
            thread.join()

    def _backends(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        return [pid for pid in children(postmaster) if "postgres: postgres postgres" in cmdline(pid)]

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "fast",
                        "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


class Sshd:
    """A private OpenSSH server: own host key and config, 127.0.0.1 high port, key auth for root."""

    def __enter__(self) -> "Sshd":
        self.dir = private_dir("sshd")
        self.port = free_port()
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / name)], check=True)
        shutil.copy(self.dir / "client_key.pub", self.dir / "authorized_keys")
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir / 'host_key'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nAuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nMaxStartups 100\nMaxSessions 100\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                        stderr=open(self.dir / "sshd.log", "w"))
        wait_for(lambda: self._answers(), "sshd to listen", deadline=30)
        self.sessions: list[int] = []
        return self

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def load(self, stop: threading.Event) -> None:
        """SSH_SESSIONS concurrent sessions (`sleep 90`), opened one by one."""
        for _ in range(SSH_SESSIONS):
            if stop.wait(1.5):
                return
            self.sessions.append(launch_detached([
                "ssh", "-i", str(self.dir / "client_key"), "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "root@127.0.0.1", "sleep 90",
            ]))

    def live_sessions(self) -> int:
        """Sessions sshd runs now: its `sleep 90` commands."""
        found = subprocess.run(["pgrep", "-f", "-x", "sleep 90"], capture_output=True, text=True).stdout.split()
        return len(found)

    def __exit__(self, *exc: object) -> None:
        for pid in self.sessions + children(self.process.pid):  # clients, then the per-connection servers
            kill_pid(pid)
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class Apache:
    """Apache httpd with the prefork MPM: private ServerRoot and config, 127.0.0.1 port."""

    MODULES = "/usr/lib/apache2/modules"

    def __enter__(self) -> "Apache":
        self.dir = private_dir("apache")
        self.port = free_port()
        (self.dir / "htdocs").mkdir()
        (self.dir / "htdocs" / "index.html").write_text("healthy\n")
        self.config = self.dir / "httpd.conf"
        self.config.write_text(
            f"ServerRoot {self.dir}\nServerName localhost\nListen 127.0.0.1:{self.port}\n"
            f"PidFile {self.dir}/httpd.pid\nDefaultRuntimeDir {self.dir}\nErrorLog {self.dir}/error.log\n"
            f"LoadModule mpm_prefork_module {self.MODULES}/mod_mpm_prefork.so\n"
            f"LoadModule authz_core_module {self.MODULES}/mod_authz_core.so\n"
            "User www-data\nGroup www-data\n"
            "StartServers 2\nMinSpareServers 2\nMaxSpareServers 40\nServerLimit 32\nMaxRequestWorkers 32\n"
            "KeepAlive On\nKeepAliveTimeout 120\nMaxKeepAliveRequests 0\n"
            f"DocumentRoot {self.dir}/htdocs\n<Directory />\n  Require all granted\n</Directory>\n"
        )
        # Its own session: apache ends its whole process group when it stops.
        self.process = subprocess.Popen(["/usr/sbin/apache2", "-f", str(self.config), "-DFOREGROUND"],
                                        stderr=open(self.dir / "stderr.log", "w"), start_new_session=True)
        wait_for(lambda: self._get(http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)),
                 "apache to answer", deadline=30)
        return self

    @staticmethod
    def _get(connection: http.client.HTTPConnection) -> bool:
        try:
            connection.request("GET", "/index.html")
            response = connection.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False

    def load(self, stop: threading.Event) -> None:
        """Keep-alive connections added one by one, each holding a worker, each re-used every second."""
        self.peak_workers = hold_connections(
            stop, 1.0, HTTP_CONNECTIONS, lambda: http.client.HTTPConnection("127.0.0.1", self.port, timeout=10),
            self._get, self.process)

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class Gunicorn:
    """gunicorn with 3 sync workers recycled every 20-25 requests (tests/corpus_app.py)."""

    def __enter__(self) -> "Gunicorn":
        self.port = free_port()
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.process = subprocess.Popen(
            [str(gunicorn), "--workers", "3", "--max-requests", "20", "--max-requests-jitter", "5",
             "--bind", f"127.0.0.1:{self.port}", "--chdir", str(HERE), "corpus_app:app"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self._get(), "gunicorn to answer", deadline=30)
        return self

    def _get(self) -> bool:
        return Apache._get(http.client.HTTPConnection("127.0.0.1", self.port, timeout=5))

    def load(self, stop: threading.Event) -> None:
        """A request loop: every worker serves its quota and is replaced, again and again."""
        self.workers_seen: set[int] = set()
        while not stop.wait(0.05):
            self._get()
            self.workers_seen.update(children(self.process.pid))

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return b"healthy" in connection.recv(1024)
    except OSError:
        return False


class Circus:
    """circusd (PyPI) running a watcher of tests/pool_worker.py on a socket it holds,
    scaled from 2 to MANAGED_POOL one process every 2 s with `incr`, the command `circusctl
    incr` sends (through circus's client library: a circusctl process takes seconds to
    start on a loaded machine, and would be an identical child of this test each time)."""

    def __enter__(self) -> "Circus":
        self.dir = private_dir("circus")
        self.port = free_port()
        self.endpoint = f"ipc://{self.dir}/control"
        config = self.dir / "circus.ini"
        config.write_text(
            f"[circus]\nendpoint = {self.endpoint}\npubsub_endpoint = ipc://{self.dir}/pubsub\n"
            f"statsd = false\n\n[socket:web]\nhost = 127.0.0.1\nport = {self.port}\n\n"
            f"[watcher:web]\ncmd = {sys.executable} {HERE / 'pool_worker.py'} $(circus.sockets.web)\n"
            "use_sockets = true\nnumprocesses = 2\nwarmup_delay = 0\n"
            f"stderr_stream.class = FileStream\nstderr_stream.filename = {self.dir}/workers.log\n"
        )
        circusd = Path(sys.executable).with_name("circusd")
        self.process = subprocess.Popen([str(circusd), str(config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.dir / "circusd.log", "w"), start_new_session=True)
        wait_for(lambda: _answers(self.port), "circus's workers to answer", deadline=60)
        return self

    def load(self, stop: threading.Event) -> None:
        """`incr web` every 2 s up to MANAGED_POOL, requests to the pool meanwhile."""
        from circus.client import CircusClient

        client = CircusClient(endpoint=self.endpoint, timeout=30)
        self.peak_workers = 0
        try:
            while not stop.wait(2.0):
                workers = len(children(self.process.pid))
                self.peak_workers = max(self.peak_workers, workers)
                if workers < MANAGED_POOL:
                    client.call({"command": "incr", "properties": {"name": "web"}})
                _answers(self.port)
        finally:
            client.stop()

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class Supervisord:
    """supervisord (PyPI) with an fcgi-program group of MANAGED_POOL tests/pool_worker.py
    processes on one socket supervisord holds, started one by one with `startProcess`, the
    call `supervisorctl start` makes (through XML-RPC from this process, as for circus)."""

    def __enter__(self) -> "Supervisord":
        self.dir = private_dir("supervisord")
        self.port = free_port()
        self.config = self.dir / "supervisord.conf"
        self.config.write_text(
            f"[unix_http_server]\nfile = {self.dir}/supervisor.sock\n\n"
            f"[supervisord]\nlogfile = {self.dir}/supervisord.log\npidfile = {self.dir}/supervisord.pid\n"
            f"childlogdir = {self.dir}\nnodaemon = true\n\n"
            "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[supervisorctl]\nserverurl = unix://{self.dir}/supervisor.sock\n\n"
            f"[fcgi-program:pool]\nsocket = tcp://127.0.0.1:{self.port}\n"
            f"command = {sys.executable} {HERE / 'pool_worker.py'} 0\nnumprocs = {MANAGED_POOL}\n"
            "process_name = %(program_name)s_%(process_num)02d\nautostart = false\nstartsecs = 0\n"
        )
        supervisord = Path(sys.executable).with_name("supervisord")
        self.process = subprocess.Popen([str(supervisord), "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: self._ctl("pid").stdout.strip().isdigit(), "supervisord to answer", deadline=60)
        return self

    def _ctl(self, *args: str) -> subprocess.CompletedProcess:
        supervisorctl = str(Path(sys.executable).with_name("supervisorctl"))
        return subprocess.run([supervisorctl, "-c", str(self.config), *args], capture_output=True, text=True,
                              timeout=60)

    def load(self, stop: threading.Event) -> None:
        """One more process of the group every 2 s, requests to the pool meanwhile."""
        import xmlrpc.client

        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.dir}/supervisor.sock")
        server = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        self.peak_workers = 0
        for number in range(MANAGED_POOL):
            server.supervisor.startProcess(f"pool:pool_{number:02d}", False)
            _answers(self.port)
            self.peak_workers = max(self.peak_workers, len(children(self.process.pid)))
            if stop.wait(2.0):
                return
        while not stop.wait(2.0):
            _answers(self.port)
            self.peak_workers = max(self.peak_workers, len(children(self.process.pid)))

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class Xinetd:
    """xinetd (Debian) with a private config: a per-connection `cat` echo service on a
    127.0.0.1 port, PER_CONNECTION connections opened one by one and held."""

    def __enter__(self) -> "Xinetd":
        self.dir = private_dir("xinetd")
        self.port = free_port()
        config = self.dir / "xinetd.conf"
        config.write_text(
            "defaults\n{\n    instances = UNLIMITED\n    per_source = UNLIMITED\n    cps = 100 1\n}\n"
            "service spawnwatch-echo\n{\n    type = UNLISTED\n    socket_type = stream\n    protocol = tcp\n"
            f"    port = {self.port}\n    bind = 127.0.0.1\n    wait = no\n    user = root\n"
            f"    server = /bin/cat\n    log_type = FILE {self.dir}/xinetd.log\n}}\n"
        )
        self.process = subprocess.Popen(["xinetd", "-dontfork", "-f", str(config), "-pidfile", str(self.dir / "pid")],
                                        stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr.log", "w"),
                                        start_new_session=True)
        wait_for(lambda: self._echo(), "xinetd to answer", deadline=30)
        return self

    def _echo(self, connection: socket.socket | None = None) -> bool:
        try:
            own = connection is None
            connection = connection or socket.create_connection(("127.0.0.1", self.port), timeout=10)
            try:
                connection.sendall(b"healthy\n")
                return connection.recv(64) == b"healthy\n"
            finally:
                if own:
                    connection.close()
        except OSError:
            return False

    def load(self, stop: threading.Event) -> None:
        """A connection more every 2 s up to PER_CONNECTION, each echoing every 2 s."""
        self.peak_services = hold_connections(
            stop, 2.0, PER_CONNECTION, lambda: socket.create_connection(("127.0.0.1", self.port), timeout=10),
            self._echo, self.process)

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class Dovecot:
    """Dovecot (Debian's dovecot-imapd) with a private config: IMAP on a 127.0.0.1 port,
    one test user in a passwd-file, mail as nobody in a temp directory; IMAP_SESSIONS
    logged-in sessions opened one by one, each an `imap` process of the master."""

    def __enter__(self) -> "Dovecot":
        self.dir = private_dir("dovecot")
        self.port = free_port()
        home = self.dir / "home"
        home.mkdir()
        shutil.chown(home, "nobody", "nogroup")
        (self.dir / "passwd").write_text("pool:{PLAIN}healthy\n")
        self.config = self.dir / "dovecot.conf"
        self.config.write_text(
            f"base_dir = {self.dir}/run\nstate_dir = {self.dir}/state\nlog_path = {self.dir}/dovecot.log\n"
            "protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n"
            f"passdb {{\n  driver = passwd-file\n  args = {self.dir}/passwd\n}}\n"
            f"userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={home}/%u\n}}\n"
            "mail_location = maildir:~/Maildir\nmail_max_userip_connections = 50\n"
            f"service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {self.port}\n  }}\n"
            "  inet_listener imaps {\n    port = 0\n  }\n}\n"
        )
        self.process = subprocess.Popen(["dovecot", "-F", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.dir / "stderr.log", "w"), start_new_session=True)
        wait_for(lambda: self._login(), "dovecot to log a user in", deadline=60)
        return self

    def _login(self):
        import imaplib

        try:
            session = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
            session.login("pool", "healthy")
            session.select("INBOX")
            return session
        except (OSError, imaplib.IMAP4.error):
            return None

    def sessions(self) -> list[int]:
        """The master's `imap` processes: one per logged-in session."""
        return [pid for pid in children(self.process.pid) if cmdline(pid).split(" ")[0] == "dovecot/imap"]

    def load(self, stop: threading.Event) -> None:
        """A login more every 2 s up to IMAP_SESSIONS, each session polled (NOOP) every 2 s."""
        sessions = []
        self.peak_sessions = 0
        try:
            while not stop.wait(2.0):
                if len(sessions) < IMAP_SESSIONS:
                    session = self._login()
                    if session is not None:
                        sessions.append(session)
                for session in sessions:
                    try:
                        session.noop()
                    except (OSError, EOFError):
                        pass
                self.peak_sessions = max(self.peak_sessions, len(self.sessions()))
        finally:
            for session in sessions:
                try:
                    session.logout()
                except (OSError, EOFError):
                    pass

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_for(seconds: float, loads: list) -> None:
    """Run every `load(stop)` in a thread for `seconds`, then stop them all."""
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(stop,), daemon=True) for load in loads]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
