"""The box's life with the provider, wired to the running service: enrollment, agent, updates.

`provisioning/` does the work (and never imports `app/`); this manager gives it what it needs
through the few collaborators the Box hands it, never the Box itself: the host link (who the box
is to the host, its token and state), the status (for heartbeats and an update's health check),
the network checker (the `rediscover` command), the parts the provider's config changes while
running, `use_identity` (the parts that say who the box is) and `restart`. OS updates
(`update_os`) go through the OS slot writer's socket (provisioning/osupdate.py), app updates
(`update`) through the software root.

Nothing talks to the host with a token before enrollment has completed and been stored: the
relay, the outbox, the policy refresh and the agent start only once the box knows its
credentials (from a previous enrollment, from the configuration, or from enrolling now).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from app import __version__
from app.config import Config, provider_settings
from app.host.payload import Identity
from app.network.manager import NetworkChecker
from app.network.static import Ipv4Setting
from app.offline.policy import PolicyManager
from app.outbox import Outbox
from app.readers import ReaderBinding
from app.retention import Retention, journal_heartbeat, resend_events
from app.status.logbuffer import install as log_buffer
from app.status.source import Status
from app.status.verdict import verdict
from provisioning.agent import DEFER, Agent
from provisioning.enrollment import Enroller
from provisioning.identity import claim_code, device_serial
from provisioning.link import HostLink
from provisioning.osupdate import OsUpdater, SlotClient
from provisioning.store import CREDENTIALS_FILE, Credentials, CredentialStore
from provisioning.update_unit import UnitUpdates
from provisioning.updates import Updater

log = logging.getLogger("connectbox.management")


class Deadline(Protocol):
    """The POS's deadline, which the provider's config may change (the loyalty service's)."""

    deadline_s: float


class Rebinding(Protocol):
    """The reader bindings, which the provider's config may change (the reader service's)."""

    bindings: list[ReaderBinding]

    def rebind(self, bindings: list[ReaderBinding]) -> None: ...


class AddressSetting(Protocol):
    """The box's IPv4 setting, which the provider's config may change (`network.ipv4`)."""

    def configured(self, source: str, setting: Ipv4Setting) -> object: ...


UNIT_POLL_S = 5.0  # how often the update unit's results are looked for


def ask_update_unit(unit: UnitUpdates, command_id: str | None, args: dict[str, Any]) -> Any:
    """The `update` command in the image: the unit does it; its result comes later."""
    if command_id is None:
        return False, "no command id"
    try:
        unit.apply(command_id, args)
    except (OSError, ValueError) as exc:
        return False, f"the update unit cannot take it: {exc}"
    return DEFER


def collect_unit_results(unit: UnitUpdates, agent: Agent) -> None:
    """Report the unit's settled results (once: the agent keeps each command's state), then
    let the unit forget them."""
    for outcome in unit.done():
        agent.complete(outcome.command_id or "", outcome.ok, outcome.detail, "update")
        try:
            unit.acknowledge(outcome.command_id or "")
        except OSError as exc:
            log.warning("update result %s not acknowledged yet: %s", outcome.command_id, exc)


def os_updater_for(
    config: Config, idle: Callable[[], bool], agent: Callable[[], Agent]
) -> OsUpdater:
    """The `update_os` worker, the same for the service and safe mode: either may be the system
    that runs after the reboot, and reports the outcome once through its `agent`."""

    def report(command_id: str | None, ok: bool, detail: str) -> None:
        if command_id is not None:
            agent().complete(command_id, ok, detail, "update_os")

    return OsUpdater(
        config.storage.data_dir,
        config.policy.trusted_keys,
        SlotClient(config.provisioning.os_slot_socket),
        is_idle=idle,
        report=report,
    )


def ask_os_updater(updater: OsUpdater, agent: Agent, args: dict[str, Any]) -> Any:
    """The `update_os` command: answered at once (refused, or the version already running), or
    DEFER: the outcome comes after the reboot."""
    outcome = updater.apply(args, agent.running_command_id)
    return DEFER if outcome is None else outcome


class Restarting(Exception):
    """The service is restarting into another release: the updater's work goes on in the next
    process (`Updater.resume()`), not in this one."""


class RemoteManagement:
    def __init__(
        self,
        config: Config,
        link: HostLink,
        policies: PolicyManager,
        *,
        status: Status,
        network: NetworkChecker,
        fixed_address: AddressSetting,
        service: Deadline,
        readers: Rebinding,
        outbox: Outbox,
        retention: Retention,
        use_identity: Callable[[Identity], None],
        restart: Callable[[], None],
        idle: Callable[[], bool],
        stopping: threading.Event,
    ) -> None:
        self.config = config
        self.link = link
        self.policies = policies
        self.status = status
        self.network = network
        self.fixed_address = fixed_address
        self.service = service
        self.readers = readers
        self.outbox = outbox
        self.retention = retention
        self.use_identity = use_identity
        self.restart = restart
        self.stopping = stopping
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
        self.unit_updates: UnitUpdates | None = None
        root, update_socket = config.provisioning.software_root, config.provisioning.update_socket
        if root is not None and update_socket is not None:  # the image: a unit does the work
            self.unit_updates = UnitUpdates(update_socket, root)
        elif root is not None:  # development: the service updates itself
            self.updater = Updater(
                config.provisioning.software_root,
                config.policy.trusted_keys,
                restart=self._restart_for_update,
                health_check=self._healthy,
                is_idle=idle,
            )
        self.os_updater = os_updater_for(config, idle, lambda: self.agent)
        self.agent = Agent(
            link,
            data_dir,
            self._heartbeat_status,
            {
                "restart": self._restart,
                "rediscover": self._rediscover,
                "update": self._update,
                "update_os": self._update_os,
                "resend_events": lambda args: resend_events(outbox, self.agent, args),
            },
            heartbeat_s=config.provisioning.heartbeat_s,
            software_version=__version__,
            credentials=self.credentials,
            log_provider=lambda: "\n".join(log_buffer().lines()),
            secrets=lambda: [s for s in (config.status.pin, link.client.token) if s],
            config_sync=policies,
            on_interrupted=self._interrupted,
        )
        self._thread: threading.Thread | None = None
        policies.on_config = self.apply_config

    def apply_config(self, config: dict[str, Any]) -> None:
        """The provider's device config, where it is safe to change while running.

        The POS listening port is not changed under a running POS: it takes effect at the next
        start (the local configuration's `[pos] listen` until then)."""
        # Checked by the file's own key declarations: a bad value is logged and the value in
        # force stays; keys this box does not know are logged and ignored.
        settings = provider_settings(config)
        if "heartbeat_s" in settings:
            self.agent.set_interval(settings["heartbeat_s"])
        if "pos.deadline_ms" in settings:
            self.service.deadline_s = settings["pos.deadline_ms"] / 1000
        if "retention_days" in settings:
            self.retention.days = settings["retention_days"]
        if "readers" in settings:
            # The provider's bindings replace the matched ones; readers bound by an explicit
            # device path in the local configuration stay.
            local = [b for b in self.config.readers.bindings if b.path]
            bindings = local + settings["readers"]
            if bindings != self.readers.bindings:
                self.readers.rebind(bindings)
        if "network.ipv4" in settings:  # applied when it changed since the provider last said
            self.fixed_address.configured("provider", settings["network.ipv4"])

    # ---- who the box is -------------------------------------------------------------------

    def _use(self, credentials: Credentials) -> None:
        self.use_identity(Identity(credentials.device_id, credentials.site_id))
        self.link.use(credentials.device_id, credentials.token)  # a new token gets its chance
        self.enrolled.set()

    # ---- life cycle -----------------------------------------------------------------------

    def start(self, start_host_parts) -> None:
        """`start_host_parts` starts what talks to the host, once the box is enrolled."""

        def run() -> None:
            if not self.enrolled.is_set():
                assert self.enroller is not None
                enrolled = self.enroller.run(self.stopping)
                if enrolled is None:
                    # Claim code refused, or stopping: the page says which, and no token-bearing
                    # call is made (the link is not enrolled).
                    self.link.not_enrolled(self.enroller.last_error or "enrollment stopped")
                    return
                self._use(enrolled)
                log.info("enrolled as device %s at site %s", enrolled.device_id, enrolled.site_id)
            self.agent.settle_token()  # a token rotation a crash interrupted ends first
            self.policies.apply_config()  # the provider's settings saved last time
            start_host_parts()
            self._report_finished_update()
            self.os_updater.start()  # an OS update a reboot interrupted: finished and reported
            self.agent.start()
            while self.unit_updates is not None and not self.stopping.wait(UNIT_POLL_S):
                self._collect_unit_results()

        self._thread = threading.Thread(target=run, name="management", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.os_updater.stop()

    def snapshot(self) -> dict[str, Any]:
        enrollment = (
            self.enroller.snapshot()
            if self.enroller is not None
            else {"state": "enrolled", "device_id": self.link.client.device_id}
        )
        return {
            "enrollment": enrollment,
            "agent": self.agent.snapshot(),
            "os_update": self.os_updater.snapshot(),
        }

    def reenroll(self) -> tuple[bool, str]:
        """A technician's action: enroll again with the claim code (e.g. after a revoked
        token). The current credentials stay until new ones are stored."""
        config = self.config
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
        self.agent.resume()  # the outbox resumes by itself once the link answers
        return True, f"Enrolled again as device {credentials.device_id}."

    # ---- heartbeat and commands -----------------------------------------------------------

    def _heartbeat_status(self) -> dict[str, Any]:
        status = self.status.status()
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
                "os_manifest": status["os"].get("manifest"),  # the image's packages, hashed
                "os_version": status["os"].get("version"),
            },
            "outbox_depth": status["outbox"]["depth"],
            "oldest_pending_s": status["outbox"]["oldest_pending_s"],
            "policy_version": status["policy"].get("policy_version"),
            **journal_heartbeat(status["journal"]),
        }

    def _restart(self, args: dict[str, Any]) -> tuple[bool, str]:
        self.restart()
        return True, "restarting"

    def _rediscover(self, args: dict[str, Any]) -> tuple[bool, str]:
        self.network.refresh()
        check = self.network.check_now()
        detail = "network rediscovered; host check " + ("passed" if check.ok else "failed")
        return check.ok, detail + ("" if check.ok else f" at {check.failed_layer}")

    def _update(self, args: dict[str, Any]) -> Any:
        if self.unit_updates is not None:
            return ask_update_unit(self.unit_updates, self.agent.running_command_id, args)
        if self.updater is None:
            return False, "updates are not set up on this box ([provisioning] software_root)"
        try:
            return self.updater.apply(args, self.agent.running_command_id)
        except Restarting:
            return DEFER  # the result comes from the next process's Updater.resume()

    def _update_os(self, args: dict[str, Any]) -> Any:
        return ask_os_updater(self.os_updater, self.agent, args)

    def _restart_for_update(self) -> None:
        # The health check must run in the new release's process, never in this one.
        self.restart()
        raise Restarting()

    def _interrupted(self, entry: dict[str, Any]) -> Any:
        # An update restarts the service on purpose: its result comes from Updater.resume()
        # (or from the update unit, which took the command); an OS update's from the OS updater
        # after the reboot.
        if entry.get("type") == "update":
            if self.unit_updates is not None and self.unit_updates.knows(entry["command_id"]):
                return DEFER
            if self.updater and self.updater.pending():
                return DEFER
        if entry.get("type") == "update_os" and self.os_updater.pending(entry["command_id"]):
            return DEFER
        return None

    def _collect_unit_results(self) -> None:
        assert self.unit_updates is not None
        collect_unit_results(self.unit_updates, self.agent)

    def _report_finished_update(self) -> None:
        if self.unit_updates is not None:
            if self.unit_updates.unsettled():  # e.g. a power cut between switch and result
                with contextlib.suppress(OSError):
                    self.unit_updates.send({"action": "resume"})
            self._collect_unit_results()
            return
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
        if not self.status.serving():
            return False, "the POS listener is not running"
        if self.link.unauthorized:  # the outbox, too, waits for a token the host takes
            return False, "neither the host nor the outbox works"
        return True, "POS listener up, host reachable or outbox working"
