"""The box's life with the provider, wired to the running service: enrollment, agent, updates.

`provisioning/` does the work (and never imports `app/`); this manager gives it what it needs
from the Box through callbacks: who the box is, its status for heartbeats, the command handlers
(restart, rediscover, update), recent log lines and the secrets to redact from them.

Nothing talks to the host with a token before enrollment has completed and been stored: the
relay, the outbox, the policy refresh and the agent start only once the box knows its
credentials (from a previous enrollment, from the configuration, or from enrolling now).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from app import __version__
from app.host.payload import Identity
from app.readers import ReaderBinding
from app.retention import journal_heartbeat, resend_events, retention_days
from app.status.logbuffer import install as log_buffer
from app.status.verdict import verdict
from provisioning.agent import DEFER, Agent
from provisioning.enrollment import Enroller
from provisioning.identity import claim_code, device_serial
from provisioning.store import CREDENTIALS_FILE, Credentials, CredentialStore
from provisioning.updates import Updater

if TYPE_CHECKING:
    from app.box import Box

log = logging.getLogger("connectbox.management")


class Restarting(Exception):
    """The service is restarting into another release: the updater's work goes on in the next
    process (`Updater.resume()`), not in this one."""


class RemoteManagement:
    def __init__(self, box: Box) -> None:
        self.box = box
        config = box.config
        data_dir = config.storage.data_dir
        self.credentials = CredentialStore(data_dir / CREDENTIALS_FILE)
        self.enrolled = threading.Event()
        self.enroller: Enroller | None = None
        known = self.credentials.load()
        if known is None and config.host.token:  # development and tests: given in the config
            known = Credentials(config.host.device_id, config.host.token, config.host.site_id)
        if known is not None:
            self._use(known)
        else:
            self.enroller = Enroller(
                config.host.url,
                self.credentials,
                device_serial(configured=config.provisioning.serial),
                claim_code(configured=config.provisioning.claim_code),
                software_version=__version__,
                ca_file=config.host.ca_file,
            )
        self.updater: Updater | None = None
        if config.provisioning.software_root is not None:
            self.updater = Updater(
                config.provisioning.software_root,
                config.policy.trusted_keys,
                restart=self._restart_for_update,
                health_check=self._healthy,
                is_idle=lambda: len(box.sessions) == 0,
            )
        self.agent = Agent(
            box.host_client,
            data_dir,
            self._heartbeat_status,
            {
                "restart": self._restart,
                "rediscover": self._rediscover,
                "update": self._update,
                "resend_events": lambda args: resend_events(box.outbox, self.agent, args),
            },
            heartbeat_s=config.provisioning.heartbeat_s,
            software_version=__version__,
            credentials=self.credentials,
            log_provider=lambda: "\n".join(log_buffer().lines()),
            secrets=lambda: [s for s in (config.status.pin, box.host_client.token) if s],
            config_sync=box.policies,
            on_interrupted=self._interrupted,
        )
        self._thread: threading.Thread | None = None
        box.policies.on_config = self.apply_config

    def apply_config(self, config: dict[str, Any]) -> None:
        """The provider's device config, where it is safe to change while running.

        The POS listening port is not changed under a running POS: it takes effect at the next
        start (the local configuration's `[pos] listen` until then)."""
        box = self.box
        box.retention.days = retention_days(config.get("retention_days"))
        if isinstance(config.get("heartbeat_s"), int) and config["heartbeat_s"] >= 5:
            self.agent.set_interval(config["heartbeat_s"])
        deadline_ms = (config.get("pos") or {}).get("deadline_ms")
        if isinstance(deadline_ms, int) and 100 <= deadline_ms <= 10_000:
            box.service.deadline_s = deadline_ms / 1000
        readers = config.get("readers")
        if isinstance(readers, list):
            # The provider's bindings replace the matched ones; readers bound by an explicit
            # device path in the local configuration stay.
            local = [b for b in box.config.readers.bindings if b.path]
            bindings = local + [
                ReaderBinding(
                    str(r["register_id"]), match={k: str(v) for k, v in r["match"].items()}
                )
                for r in readers
                if isinstance(r, dict) and r.get("register_id") and isinstance(r.get("match"), dict)
            ]
            if bindings != box.readers.bindings:
                box.readers.rebind(bindings)

    # ---- who the box is -------------------------------------------------------------------

    def _use(self, credentials: Credentials) -> None:
        box = self.box
        box.service.identity = Identity(credentials.device_id, credentials.site_id)
        box.policies.site_id = credentials.site_id
        box.network.device_id = credentials.device_id
        box.link.use(credentials.device_id, credentials.token)  # a new token gets its chance
        self.enrolled.set()

    # ---- life cycle -----------------------------------------------------------------------

    def start(self, start_host_parts) -> None:
        """`start_host_parts` starts what talks to the host, once the box is enrolled."""

        def run() -> None:
            if not self.enrolled.is_set():
                assert self.enroller is not None
                enrolled = self.enroller.run(self.box.stopping)
                if enrolled is None:
                    # Claim code refused, or stopping: the page says which, and no token-bearing
                    # call is made (the link is not enrolled).
                    self.box.link.not_enrolled(self.enroller.last_error or "enrollment stopped")
                    return
                self._use(enrolled)
                log.info("enrolled as device %s at site %s", enrolled.device_id, enrolled.site_id)
            self.agent.settle_token()  # a token rotation a crash interrupted ends first
            self.box.policies.apply_config()  # the provider's settings saved last time
            start_host_parts()
            self._report_finished_update()
            self.agent.start()

        self._thread = threading.Thread(target=run, name="management", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.agent.stop()

    def snapshot(self) -> dict[str, Any]:
        enrollment = (
            self.enroller.snapshot()
            if self.enroller is not None
            else {"state": "enrolled", "device_id": self.box.host_client.device_id}
        )
        return {"enrollment": enrollment, "agent": self.agent.snapshot()}

    def reenroll(self) -> tuple[bool, str]:
        """A technician's action: enroll again with the claim code (e.g. after a revoked
        token). The current credentials stay until new ones are stored."""
        config = self.box.config
        code = claim_code(configured=config.provisioning.claim_code)
        if not code:
            return False, "No claim code on this box: set [provisioning] claim_code."
        enroller = Enroller(
            config.host.url,
            self.credentials,
            device_serial(configured=config.provisioning.serial),
            code,
            software_version=__version__,
            ca_file=config.host.ca_file,
        )
        try:
            credentials = enroller.enroll_once()
        except Exception as exc:  # ClaimRejected, HostError: say which, plainly
            return False, f"Enrollment failed: {exc}"
        self.enroller = enroller
        self._use(credentials)
        self.agent.resume(credentials.token, credentials.device_id)
        self.box.outbox.retry_now()
        return True, f"Enrolled again as device {credentials.device_id}."

    # ---- heartbeat and commands -----------------------------------------------------------

    def _heartbeat_status(self) -> dict[str, Any]:
        status = self.box.status()
        found = verdict(status)
        host_online = status["host"]["online"]
        # A heartbeat that reaches the host is proof of the link at that moment: it says
        # online, or degraded for another reason, never offline (host-api.md).
        host_only = found.key in ("host_unreachable", "host_slow")
        return {
            "status": "online" if found.ok or host_only else "degraded",
            "components": {
                "verdict": found.title,
                "pos_connections": len(status["pos"]["connections"]),
                "readers": {r["devnode"]: r["state"] for r in status["readers"]},
                "host_online": host_online,
                "policy_refused": status["policy"].get("refused"),
                "os_slot": status["os"]["slot"],  # which root slot (a/b) it booted from
            },
            "outbox_depth": status["outbox"]["depth"],
            "oldest_pending_s": status["outbox"]["oldest_pending_s"],
            "policy_version": status["policy"].get("policy_version"),
            **journal_heartbeat(status["journal"]),
        }

    def _restart(self, args: dict[str, Any]) -> tuple[bool, str]:
        self.box.request_restart()
        return True, "restarting"

    def _rediscover(self, args: dict[str, Any]) -> tuple[bool, str]:
        self.box.network.refresh()
        check = self.box.network.check_now()
        detail = "network rediscovered; host check " + ("passed" if check.ok else "failed")
        return check.ok, detail + ("" if check.ok else f" at {check.failed_layer}")

    def _update(self, args: dict[str, Any]) -> Any:
        if self.updater is None:
            return False, "updates are not set up on this box ([provisioning] software_root)"
        try:
            return self.updater.apply(args, self.agent.running_command_id)
        except Restarting:
            return DEFER  # the result comes from the next process's Updater.resume()

    def _restart_for_update(self) -> None:
        # The health check must run in the new release's process, never in this one.
        self.box.request_restart()
        raise Restarting()

    def _interrupted(self, entry: dict[str, Any]) -> Any:
        # An update restarts the service on purpose: its result comes from Updater.resume().
        if entry.get("type") == "update" and self.updater and self.updater.pending():
            return DEFER
        return None

    def _report_finished_update(self) -> None:
        if self.updater is None:
            return
        try:
            outcome = self.updater.resume()
        except Restarting:
            return  # rolled back: the previous release's process reports it
        if outcome is not None and outcome.command_id:
            self.agent.complete(outcome.command_id, outcome.ok, outcome.detail, "update")
            self.updater.acknowledge(outcome.command_id)

    def _healthy(self) -> tuple[bool, str]:
        box = self.box
        if not box.pos_server.running:
            return False, "the POS listener is not running"
        if not (box.link.online or box.outbox.snapshot()["paused"] is None):
            return False, "neither the host nor the outbox works"
        return True, "POS listener up, host reachable or outbox working"
