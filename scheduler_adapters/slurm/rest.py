"""The ``slurmrestd`` adapter: Slurm's REST API over httpx, JWT-authenticated.

The API version is discovered by trying ``GET /slurm/<version>/ping`` from the newest
supported version down (Slurm-web does the same); 22.05 answers v0.0.38 and 404s the
rest, 25.11 answers v0.0.44 first. Only a successful ping pins a version: a 5xx,
401/403 or timeout raises and leaves it undiscovered, and when a discovered version
starts answering 404 (slurmrestd was upgraded and dropped it) it is discovered again.
The broker authenticates as ``user_name`` (``slurm`` or ``root``: users allowed to act
for others) with an HS256 token (PyJWT) minted from slurmctld's ``jwt_key_file``, or
read from ``token_file``, and acts for the job's user with ``X-SLURM-USER-NAME``.

Failures: ``errors[]`` in a reply become ``SchedulerError``s carrying Slurm's error
number; connection failures, 502–504 and Slurm's communication errors are
``SchedulerUnavailable`` (transient); 401/403 are ``AdapterConfigError``; a refused
submission is ``SubmitRejected``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt

from .. import arrays
from ..base import ClusterInfo, JobInfo, JobSpec, NodeInfo, SchedulerAdapter
from ..errors import AdapterConfigError, SchedulerError, SchedulerUnavailable, SubmitRejected
from .common import JOB_ID, cluster_info, from_accounting, is_transient, keyed_by_tag
from .parse import envelope_errors, number, parse_jobs, parse_nodes, plugin_version, release
from .rest_body import job_description

if TYPE_CHECKING:
    from .cli import SlurmCliAdapter

__all__ = ["SUPPORTED_VERSIONS", "SlurmRestAdapter", "mint_token"]

log = logging.getLogger(__name__)

#: API versions this adapter speaks, newest first (tried in this order by ``ping``).
SUPPORTED_VERSIONS = ("v0.0.44", "v0.0.43", "v0.0.42", "v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38")
#: Slurm error numbers meaning "the controller or slurmdbd is unreachable": retry later.
TRANSIENT_CODES = frozenset({1001, 1002, 1003, 1004, 1007, 5004, 5005, 7000})
#: Error numbers meaning the job is already gone: cancel is then a no-op.
GONE_CODES = frozenset({2017, 2021})  # ESLURM_INVALID_JOB_ID, ESLURM_ALREADY_DONE
EMPTY_RESULT = 9003
_BAD_EXIT_CODE_PLUGINS = ("dbv0.0.36", "dbv0.0.37", "dbv0.0.38")


def mint_token(key: bytes, user_name: str, lifespan_s: int, now: float | None = None) -> str:
    """An HS256 JWT ``{iat, exp, sun}`` as slurmctld's ``auth/jwt`` expects it (PyJWT)."""
    issued = int(time.time() if now is None else now)
    claims = {"iat": issued, "exp": issued + lifespan_s, "sun": user_name}
    return jwt.encode(claims, key, algorithm="HS256")


class SlurmRestAdapter(SchedulerAdapter):
    """Drive one cluster through its ``slurmrestd``.

    Options (the ``[clusters.options]`` table):

    * ``url``: slurmrestd's base URL (``http://127.0.0.1:6820``).
    * ``jwt_key_file`` *or* ``token_file``: the HS256 key to mint tokens with, or a file
      holding a token (re-read on every request, so it may be rotated).
    * ``user_name``: the identity of the token (default ``slurm``).
    * ``api_version``: pin a version (``v0.0.38``) instead of discovering it.
    * ``timeout_s``: per-request timeout.
    * ``slurm_cluster``: the ``ClusterName`` if it differs from the broker's name.
    * ``slurm_conf``: optional local ``slurm.conf`` of the cluster. Used for what this
      API version cannot do: exact exit codes of forgotten jobs on 22.05 (its slurmdb
      API reports 0) and drain/resume before v0.0.40; also by accounting sync.
    * ``bin_dir``: where that slurm.conf's Slurm tools are, if not on ``PATH``.
    * ``transport``: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
    """

    kind = "slurmrestd"
    supports_dependencies = True

    def __init__(
        self,
        cluster: str,
        *,
        url: str,
        jwt_key_file: str | None = None,
        token_file: str | None = None,
        user_name: str = "slurm",
        api_version: str | None = None,
        timeout_s: float = 10.0,
        slurm_cluster: str | None = None,
        slurm_conf: str | None = None,
        bin_dir: str | None = None,
        token_lifespan_s: int = 600,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(cluster)
        if (jwt_key_file is None) == (token_file is None):
            raise AdapterConfigError(
                "give exactly one of jwt_key_file and token_file", cluster=cluster
            )
        if api_version is not None and api_version not in SUPPORTED_VERSIONS:
            raise AdapterConfigError(f"unsupported api_version {api_version!r}", cluster=cluster)
        self.url = url.rstrip("/")
        self.jwt_key_file = jwt_key_file
        self.token_file = token_file
        self.user_name = user_name
        self.api_version = api_version
        self._discovered = False  # api_version found by _discover, not configured
        self.slurm_cluster = slurm_cluster or cluster
        self.slurm_conf = slurm_conf
        self.bin_dir = bin_dir
        self.token_lifespan_s = token_lifespan_s
        self._token: tuple[str, float] | None = None
        # The controller's last job list and its ``last_update`` (``_live_jobs``).
        self._jobs_seen: tuple[int, dict[str, JobInfo]] | None = None
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)

    # ------------------------------------------------------------------ HTTP plumbing
    def _bearer(self) -> str:
        if self.token_file is not None:
            try:
                return Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise AdapterConfigError(
                    f"cannot read token_file: {exc}", cluster=self.cluster
                ) from exc
        now = time.time()
        if self._token is None or now > self._token[1]:
            try:
                key = Path(str(self.jwt_key_file)).read_bytes()
            except OSError as exc:
                raise AdapterConfigError(
                    f"cannot read jwt_key_file: {exc}", cluster=self.cluster
                ) from exc
            token = mint_token(key, self.user_name, self.token_lifespan_s, now)
            self._token = (token, now + self.token_lifespan_s * 0.8)  # renew before expiry
        return self._token[0]

    def _request(
        self, method: str, path: str, *, body: Any = None, act_as: str | None = None
    ) -> httpx.Response:
        headers = {
            "X-SLURM-USER-NAME": act_as or self.user_name,
            "X-SLURM-USER-TOKEN": self._bearer(),
        }
        try:
            return self._client.request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise SchedulerUnavailable(
                f"slurmrestd at {self.url} unreachable: {exc}", cluster=self.cluster
            ) from exc

    def _call(
        self, method: str, path: str, *, body: Any = None, act_as: str | None = None
    ) -> dict[str, Any]:
        self._count(f"{method} {_endpoint(path)}")
        resp = self._request(method, path, body=body, act_as=act_as)
        if resp.status_code == 404 and self._version_gone(path):
            old = str(self.api_version)
            self.api_version, self._discovered = None, False
            new = self.version  # discovers again (or raises, leaving nothing pinned)
            log.info("slurmrestd at %s no longer speaks %s; now %s", self.url, old, new)
            path = path.replace(f"/{old}/", f"/{new}/", 1)
            resp = self._request(method, path, body=body, act_as=act_as)
        return self._check(resp, method, path)

    def _version_gone(self, path: str) -> bool:
        """After a 404 on ``path``: did slurmrestd drop the discovered API version?"""
        if not self._discovered or f"/{self.api_version}/" not in path:
            return False
        ping = f"/slurm/{self.api_version}/ping"
        return path == ping or self._request("GET", ping).status_code == 404

    def _check(self, resp: httpx.Response, method: str, path: str) -> dict[str, Any]:
        if resp.status_code in (401, 403):
            raise AdapterConfigError(
                f"slurmrestd refused the credentials ({resp.status_code})",
                cluster=self.cluster,
                code=resp.status_code,
            )
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            message = f"{method} {path}: HTTP {resp.status_code}: {resp.text[:200]}"
            transient = resp.status_code >= 500 or resp.status_code == 429
            cls = SchedulerUnavailable if transient else SchedulerError
            raise cls(message, cluster=self.cluster, code=resp.status_code)
        for warning in doc.get("warnings") or []:
            log.debug("slurmrestd warning on %s %s: %s", method, path, warning)
        # 9003 (ESLURM_REST_EMPTY_RESULT, "Nothing found with query") comes with HTTP 200
        # when a slurmdb query matches no job: an empty answer, not a failure.
        errors = [e for e in envelope_errors(doc) if e[0] != EMPTY_RESULT]
        if errors or resp.status_code >= 400:
            raise self._error(errors, resp.status_code)
        return doc

    def _error(self, errors: list[tuple[int | None, str]], status: int) -> SchedulerError:
        codes = [c for c, _ in errors if c is not None]
        message = "; ".join(m for _, m in errors) or f"HTTP {status}"
        code = next((c for c in codes if c not in (-1, 9000, 9001)), codes[0] if codes else None)
        transient = (
            status in (502, 503, 504)
            or any(c in TRANSIENT_CODES for c in codes)
            or (is_transient(message))
        )
        cls = SchedulerUnavailable if transient else SchedulerError
        return cls(message, transient=transient, cluster=self.cluster, code=code)

    @property
    def version(self) -> str:
        """The API version in use, discovered on first need."""
        if self.api_version is None:
            self._discover()
        return str(self.api_version)

    def _discover(self) -> dict[str, Any]:
        """Ping from the newest version down; pin the first that answers a good ping.

        A 404 means "not this version"; anything else that is not a success (5xx, 401,
        a timeout) raises from ``_check``/``_request`` with nothing pinned, so the next
        call tries again instead of keeping a version guessed from an error page.
        """
        for candidate in SUPPORTED_VERSIONS:
            path = f"/slurm/{candidate}/ping"
            resp = self._request("GET", path)
            if resp.status_code == 404:
                continue
            doc = self._check(resp, "GET", path)
            self.api_version, self._discovered = candidate, True
            return doc
        raise AdapterConfigError(
            f"slurmrestd at {self.url} speaks none of {', '.join(SUPPORTED_VERSIONS)}",
            cluster=self.cluster,
        )

    def _db(self) -> str:
        return f"/slurmdb/{self.version}"

    def _ctl(self) -> str:
        return f"/slurm/{self.version}"

    # ------------------------------------------------------------------ contract
    def submit(self, spec: JobSpec) -> str:
        if spec.user is None:
            raise SubmitRejected("refusing to submit without a user", cluster=self.cluster)
        try:
            body = job_description(spec, self.version)
        except ValueError as exc:
            raise SubmitRejected(str(exc), cluster=self.cluster) from exc
        try:
            doc = self._call("POST", f"{self._ctl()}/job/submit", body=body, act_as=spec.user)
        except SchedulerError as exc:
            if exc.transient or isinstance(exc, AdapterConfigError):
                raise
            raise SubmitRejected(exc.message, cluster=self.cluster, code=exc.code) from exc
        result = doc.get("result") if isinstance(doc.get("result"), dict) else {}
        job_id = doc.get("job_id", (result or {}).get("job_id"))
        if job_id is None or not JOB_ID.match(str(job_id)):
            raise SchedulerError(f"submit answered no job id: {doc!r:.200}", cluster=self.cluster)
        return str(job_id)

    def status(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        wanted = {str(j) for j in job_ids if JOB_ID.match(str(j))}
        if not wanted:
            return {}
        live = self._live_jobs()
        found = {j: live[j] for j in wanted if j in live}
        missing = sorted(wanted - found.keys(), key=lambda j: (len(j), j))
        # Ended: settled from accounting (elapsed without time suspended, every run of a
        # requeued job, every task of an array: ``from_accounting``).
        ended = sorted((j for j, i in found.items() if i.state.terminal), key=lambda j: (len(j), j))
        if missing or ended:
            cluster = urllib.parse.quote(self.slurm_cluster, safe="")
            doc = self._call(
                "GET", f"{self._db()}/jobs?cluster={cluster}&{self._steps(missing + ended)}"
            )
            done = parse_jobs(doc, self.slurm_cluster)
            if plugin_version(doc) in _BAD_EXIT_CODE_PLUGINS:
                done = self._fix_exit_codes(done)
            found.update({j: done[j] for j in missing if j in done})
            for j in ended:
                found[j] = from_accounting(found[j], done.get(j))
        return found

    def _live_jobs(self) -> dict[str, JobInfo]:
        """The controller's jobs. Where slurmrestd gives the list's ``last_update``
        (23.02+; 22.05's v0.0.38 does not), the next call passes it back as
        ``update_time``: a controller whose jobs have not changed since then answers
        "No job changes since" (no jobs, ``last_update`` 0) without packing its jobs,
        and the list already parsed stands."""
        path = f"{self._ctl()}/jobs"
        seen = self._jobs_seen
        doc = self._call("GET", path if seen is None else f"{path}?update_time={seen[0]}")
        if seen is not None and not doc.get("jobs") and not number(doc.get("last_update")):
            return seen[1]
        jobs = parse_jobs(doc, self.slurm_cluster)
        stamp = number(doc.get("last_update"))
        self._jobs_seen = (stamp, jobs) if stamp else None
        return jobs

    def _steps(self, ids: Sequence[str]) -> str:
        """The slurmdb jobs query naming ``ids``. 22.05 (v0.0.38/39) wants one ``step``
        with escaped commas (a raw one is a 400); 25.11 refuses that ("Query empty or
        not RFC7320 compliant") and a raw comma, and takes ``step`` once per id."""
        if self.version in ("v0.0.38", "v0.0.39"):
            return "step=" + urllib.parse.quote(",".join(ids), safe="")
        return "&".join(f"step={urllib.parse.quote(j, safe='')}" for j in ids)

    def _fix_exit_codes(self, jobs: dict[str, JobInfo]) -> dict[str, JobInfo]:
        # 22.05's dbv0.0.38 reports return_code 0 for `exit 3` (fixtures 22.05/sacct.json).
        # With a local slurm.conf, sacct's text output has the truth; without one an exit
        # code of 0 on a FAILED job is unknown, not success.
        if self.slurm_conf:
            return self._cli()._fix_exit_codes(jobs)
        return {j: _unknown_exit(i) for j, i in jobs.items()}

    def _cli(self) -> SlurmCliAdapter:
        from .cli import SlurmCliAdapter

        return SlurmCliAdapter(
            self.cluster,
            slurm_conf=self.slurm_conf,
            bin_dir=self.bin_dir,
            slurm_cluster=self.slurm_cluster,
        )

    def cancel(self, job_id: str) -> None:
        if not JOB_ID.match(str(job_id)):
            return
        try:
            self._call("DELETE", f"{self._ctl()}/job/{job_id}")
        except SchedulerError as exc:
            gone = (
                exc.code in GONE_CODES
                or "invalid job id" in exc.message.lower()
                or ("already completing or completed" in exc.message.lower())
            )
            if not gone or exc.transient:
                raise

    def nodes(self) -> list[NodeInfo]:
        return parse_nodes(self._call("GET", f"{self._ctl()}/nodes"))

    def ping(self) -> ClusterInfo:
        doc = (
            self._discover()
            if self.api_version is None
            else self._call("GET", f"{self._ctl()}/ping")
        )
        pings = doc.get("pings") or []
        if not any(str(p.get("ping", p.get("pinged", ""))).upper() == "UP" for p in pings):
            raise SchedulerUnavailable(f"slurmctld is not up: {pings!r:.200}", cluster=self.cluster)
        nodes = self.nodes()
        jobs = parse_jobs(self._call("GET", f"{self._ctl()}/jobs"), self.slurm_cluster)
        return cluster_info(self.cluster, release(doc), nodes, jobs.values())

    def list_tagged(self, since: datetime) -> dict[str, JobInfo]:
        minutes = max(1, int((datetime.now(UTC) - since).total_seconds() // 60) + 1)
        cluster = urllib.parse.quote(self.slurm_cluster, safe="")
        # "now-Nminutes": 22.05 rejects epoch seconds here ("Unable to parse time format").
        done = parse_jobs(
            self._call(
                "GET", f"{self._db()}/jobs?cluster={cluster}&start_time=now-{minutes}minutes"
            ),
            self.slurm_cluster,
        )
        live = parse_jobs(self._call("GET", f"{self._ctl()}/jobs"), self.slurm_cluster)
        return keyed_by_tag({**done, **live}, since)

    def drain(self, node: str, reason: str) -> None:
        self._update_node(node, "DRAIN", reason)

    def resume(self, node: str) -> None:
        self._update_node(node, "RESUME", None)

    def _update_node(self, node: str, state: str, reason: str | None) -> None:
        if self.version in ("v0.0.38", "v0.0.39"):  # no node update in these APIs
            if not self.slurm_conf:
                raise SchedulerError(
                    f"API {self.version} has no node endpoint: configure slurm_conf",
                    cluster=self.cluster,
                )
            cli = self._cli()
            cli.drain(node, reason or "") if state == "DRAIN" else cli.resume(node)
            return
        body: dict[str, Any] = {"state": [state]}
        if reason:
            body["reason"] = reason
        self._call("POST", f"{self._ctl()}/node/{urllib.parse.quote(node, safe='')}", body=body)

    def close(self) -> None:
        self._client.close()


def _unknown_exit(info: JobInfo) -> JobInfo:
    """A FAILED job (or task) whose exit code reads 0 has an unknown one (22.05's bug)."""
    if info.tasks:
        tasks = [_unknown_exit(t) for t in info.tasks]
        return arrays.aggregate(info.job_id, tasks, base=info)
    if info.state.value == "failed" and info.exit_code == 0:
        return dataclasses.replace(info, exit_code=None)
    return info


def _endpoint(path: str) -> str:
    """A request path without its version, query and ids: ``slurm/jobs``,
    ``slurmdb/jobs``, ``slurm/job`` (metric labels stay few)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    kept = [p for p in parts if not p.startswith("v0.") and not p.isdigit() and "_" not in p]
    return "/".join(kept[:2]) or "/"
