"""`spawnwatch watch`: continuous leak detection, live or on a recording."""

from __future__ import annotations

import socket
import sys
from contextlib import ExitStack
from functools import partial
from typing import Any

import click

from spawnwatch.cli.common import (
    CannotTrace,
    config_option,
    duration_option,
    json_option,
    load_config,
    log,
    one_line_errors,
    require_root,
    ring_buffer_option,
    show_secrets_option,
)
from spawnwatch.config import Config
from spawnwatch.consumers.replay import Replay
from spawnwatch.consumers.watch import Detection, summary
from spawnwatch.events import RecordError
from spawnwatch.probe import ProbeError
from spawnwatch.recording import RecordingError
from spawnwatch.records import Record
from spawnwatch.runner import run_live
from spawnwatch.sinks import Fanout, OnlyContainer, Sink, ledger_first
from spawnwatch.sinks.human import Human
from spawnwatch.sinks.jsonl import JsonLines
from spawnwatch.text import printable


@click.command("watch")
@duration_option
@config_option
@click.option("--record", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also save the snapshot, every event and every alert to FILE (msgpack, mode 0600) for --replay; "
                   "never through a symlink, and an existing FILE must be a regular file of this user.")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Run detection on a recording (from --record or `trace --record`) instead of the kernel; no root needed.")
@click.option("--metrics-address", metavar="[HOST]:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics: PORT alone is 127.0.0.1:PORT, "
                   ":PORT every interface (for a Prometheus on another host), [::1]:PORT an IPv6 address.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Shorthand for --metrics-address 127.0.0.1:PORT.")
@click.option("--web-config-file", metavar="FILE",
              help="Serve the metrics over TLS and/or basic auth as FILE says: the exporters' web config "
                   "(node_exporter's --web.config.file: tls_server_config, basic_auth_users).")
@click.option("--container", metavar="NAME", help="Only alerts about this container (name or id prefix).")
@click.option("--webhook", metavar="URL",
              help="POST every alert to URL; an Alertmanager when URL ends in /api/v2/alerts (its API, active "
                   "alerts re-sent every --resend-every seconds).")
@click.option("--alertmanager", "alertmanagers", multiple=True, metavar="URL",
              help="Send alerts to the Alertmanager at URL (http://HOST:9093 or its /api/v2/alerts); repeat it for "
                   "each replica of an HA pair: replicas do not share alerts, so each gets every alert, and one "
                   "that is down delays none of the others.")
@click.option("--bearer-token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Send the token in FILE as `Authorization: Bearer` to the Alertmanagers and the webhook.")
@click.option("--ca-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Check the Alertmanagers' and the webhook's certificates with the CAs in FILE (PEM) instead of "
                   "the system's.")
@click.option("--cert-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Present this client certificate (PEM) to the Alertmanagers and the webhook.")
@click.option("--key-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="The key of --cert-file (PEM), when it is not in that file.")
@click.option("--resend-every", type=click.FloatRange(min=1), default=60.0, show_default=True, metavar="SECONDS",
              help="How often an Alertmanager is told again of every active alert (keep it below its "
                   "resolve_timeout, 5 min by default).")
@click.option("--state-dir", metavar="DIR",
              help="Keep the firing alerts in DIR/alerts.json for `report` and `reap`, and in "
                   "DIR/containers.json which client asked for each running container, read back at the "
                   "next start (default: the config's [watch] state_dir, /var/lib/spawnwatch); '' keeps none.")
@show_secrets_option
@ring_buffer_option
@json_option
@one_line_errors
def command(duration: float | None, config_path: str | None, record: str | None, replay: str | None,
            metrics_address: str | None, metrics_port: int | None, web_config_file: str | None,
            container: str | None, webhook: str | None, alertmanagers: tuple[str, ...],
            bearer_token_file: str | None, ca_file: str | None, cert_file: str | None, key_file: str | None,
            resend_every: float, state_dir: str | None, show_secrets: bool, ring_buffer_kb: int | None,
            as_json: bool) -> None:
    """Catch processes that keep spawning identical children and never clean them up.

    Children are grouped by spawner and signature (argv normalised: `npx -y
    @21st-dev/magic` and `npm exec @21st-dev/magic@latest` are one group).
    Rules: accumulating (identical live children keep growing), orphaned
    (descendants of killed children left running, charged to the process that
    spawned the children; `orphans` counts every leaked process, e.g. both the
    `sh -c` and the node server of a killed `npm exec`), zombie (exited
    children never reaped), spawn_rate (sustained spawns per minute), oom,
    pids (a container or unit near its pids limit, or refusing forks).

    Starts from a /proc snapshot, so a leak that is already there is reported
    within seconds.  Each alert is sent `firing` once, re-sent with new counts
    at most every 30 s, and `resolved` when its condition clears.

    With --json the first line is {"kind": "ready", "pid": ...}, then one alert
    object per line, then {"kind": "stats", ...} last, as for `trace`.

    Secrets in argv (API keys, tokens, passwords) are replaced by <redacted>
    before detection, so alerts, webhooks, metrics and recordings never carry
    them, and a replay redacts a recording made with --show-secrets.

    A live watch keeps its firing alerts in /var/lib/spawnwatch/alerts.json
    (--state-dir) for `report` and `reap`: containers that exited `docker run`
    clients left running are known only from what it saw.  Which client asked
    for each running container is kept there too (containers.json) and read
    back at the next start, so a restart still charges a host its leaks.

    \b
    Examples:
      sudo spawnwatch watch
      sudo spawnwatch watch --json --duration 60 --record leak.msgpack
      spawnwatch watch --replay leak.msgpack --json
      sudo spawnwatch watch --metrics-port 9464 --webhook http://127.0.0.1:9093/api/v2/alerts
      sudo spawnwatch watch --alertmanager https://am-0:9093 --alertmanager https://am-1:9093 \\
          --ca-file /etc/spawnwatch/ca.pem --bearer-token-file /etc/spawnwatch/am-token
      sudo spawnwatch watch --metrics-address :9464 --web-config-file /etc/spawnwatch/web-config.yml
      sudo spawnwatch watch --container metamcp
    """
    if replay and (record or duration is not None or ring_buffer_kb is not None or state_dir):
        raise click.UsageError(
            "--replay reads a finished recording: --record, --duration, --ring-buffer-kb and --state-dir do not apply"
        )
    for url, option in [(webhook, "--webhook"), *((url, "--alertmanager") for url in alertmanagers)]:
        if url is not None and not url.startswith(("http://", "https://")):
            raise click.BadParameter("must be an http:// or https:// URL", param_hint=option)
    credentials = http_credentials(bearer_token_file, ca_file, cert_file, key_file)
    if credentials is not None and not (webhook or alertmanagers):
        raise click.UsageError("--bearer-token-file, --ca-file, --cert-file and --key-file are for "
                               "--alertmanager and --webhook: give one of them")
    if metrics_address is not None and metrics_port is not None:
        raise click.UsageError("--metrics-port is a shorthand of --metrics-address: give one of them")
    if metrics_port is not None:
        metrics_address = str(metrics_port)
    if web_config_file is not None and metrics_address is None:
        raise click.UsageError("--web-config-file says how metrics are served: give --metrics-address too")
    config = load_config(config_path, show_secrets)
    if not replay:
        require_root()  # before anything is served or kept (metrics, the ledger) for a watch that cannot trace
    with ExitStack() as stack:
        sinks: list[Sink] = [JsonLines(sys.stdout) if as_json else Human(sys.stdout, color=sys.stdout.isatty())]
        metrics = serve_metrics(metrics_address, web_config_file) if metrics_address is not None else None
        if metrics is not None:
            sinks.append(metrics)
            log(f"metrics on {metrics.url}")
        notifiers = notifier_sinks(webhook, alertmanagers, resend_every, metrics, credentials)
        sinks.extend(notifiers)
        sink: Sink = Fanout(sinks)
        if container is not None:
            sink = OnlyContainer(sink, container)
        state_dir = config.watch.state_dir if state_dir is None else state_dir
        kept = ledger_sink(state_dir) if state_dir and not replay else None
        sink = ledger_first(sink, kept)  # every alert, whatever --container shows
        stack.callback(sink.close)
        if replay:
            watch_recording(config, replay, sink)
        else:
            try:
                detection = Detection(config, sink, partial(sink_stats, notifiers, metrics), log,
                                      state_dir=state_dir if kept is not None else None)
                run_live(config, detection, duration, record, ring_buffer_kb)
            except ProbeError as exc:
                raise CannotTrace(str(exc)) from exc
            except RecordingError as exc:
                raise click.BadParameter(str(exc), param_hint="--record") from exc


def serve_metrics(address: str, web_config_file: str | None) -> Any:
    from spawnwatch.sinks.exporter_web import WebConfigError, load_web_config
    from spawnwatch.sinks.prometheus import Metrics, MetricsAddressError, parse_address

    try:
        web = load_web_config(web_config_file) if web_config_file is not None else None
    except WebConfigError as exc:
        # The file's own text may be quoted (a YAML error, a user's name): one line, no escapes obeyed.
        raise click.BadParameter(printable(str(exc), 1000), param_hint="--web-config-file") from exc
    try:
        return Metrics(parse_address(address), web)
    except MetricsAddressError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics-address") from exc
    except OSError as exc:
        raise click.BadParameter(f"cannot listen on {address}: {exc.strerror}", param_hint="--metrics-address") from exc


def ledger_sink(state_dir: str) -> Any:
    """The ledger for `report` and `reap`; None, said on stderr, when it cannot be kept:
    alerting goes on without it."""
    from spawnwatch.sinks.ledger import Ledger, LedgerBusy

    try:
        return Ledger(state_dir, on_error=log)
    except LedgerBusy as exc:
        log(f"no ledger: {exc} (--state-dir to keep one elsewhere)")
    except OSError as exc:
        log(f"no ledger: cannot keep it in {state_dir}: {exc.strerror or exc}")
    return None


def http_credentials(token_file: str | None, ca_file: str | None, cert_file: str | None,
                     key_file: str | None) -> Any:
    """The notifiers' credentials, None when no option gives any."""
    from spawnwatch.sinks.http import CredentialsError, load_credentials

    if token_file is None and ca_file is None and cert_file is None and key_file is None:
        return None
    try:
        return load_credentials(token_file, ca_file, cert_file, key_file)
    except CredentialsError as exc:
        raise click.UsageError(str(exc)) from exc


def notifier_sinks(webhook: str | None, alertmanagers: tuple[str, ...], resend_every: float, metrics: Any,
                   credentials: Any) -> list[Any]:
    """One sink for every Alertmanager (a --webhook ending in /api/v2/alerts is one more), one for a webhook."""
    from spawnwatch.sinks.alertmanager import (
        API_PATH,
        Alertmanager,
        is_alertmanager_url,
    )
    from spawnwatch.sinks.webhook import Webhook

    delivery: dict[str, Any] = {"on_error": log}
    if credentials is not None:
        delivery["credentials"] = credentials
    urls = [url if is_alertmanager_url(url) else url.rstrip("/") + API_PATH for url in alertmanagers]
    sinks: list[Any] = []
    if webhook and is_alertmanager_url(webhook):
        urls.append(webhook)
    elif webhook:
        sinks.append(Webhook(webhook, **delivery))
    if urls:
        host = socket.gethostname()
        # Alertmanager shows it as the alert's source: this watcher's metrics when it serves them.
        generator = metrics.url.replace(metrics.host, host, 1) if metrics is not None else f"urn:spawnwatch:{host}"
        sinks.append(Alertmanager(*urls, generator_url=generator, resend_every_s=resend_every, host=host, **delivery))
    return sinks


def sink_stats(notifiers: list[Any], metrics: Any) -> Record:
    """The counters of the sinks themselves: the notifiers' posts, the metrics endpoint's evictions."""
    counters = notification_stats(notifiers) if notifiers else {}
    if metrics is not None:
        counters["evicted_by_table"] = metrics.evicted_by_table()
    return counters


def notification_stats(notifiers: list[Any]) -> Record:
    """The posts of every notifier: in all, and by receiver."""
    from spawnwatch.sinks.http import counts_by_receiver, summed_counts

    deliveries = [delivery for notifier in notifiers for delivery in notifier.deliveries]
    return {"notifications": summed_counts(deliveries), "notifications_by_receiver": counts_by_receiver(deliveries)}


def watch_recording(config: Config, path: str, sink: Sink) -> None:
    """The live pipeline on a recording (consumers.replay), its alerts to the sink."""
    try:
        replay = Replay(config, path)
        origin = replay.origin
        sink.send(replay.ready())
        for alerts in replay.steps():
            for alert in alerts:
                sink.send(origin.stamp(alert.to_record(), alert.ts))
    except (RecordingError, RecordError) as exc:
        raise click.ClickException(str(exc)) from exc
    stats = replay.stats()
    sink.send(stats)
    log(summary(stats, replay.pipeline))
