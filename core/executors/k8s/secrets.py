"""The values of the Secrets a run or build gets, read only to mask them in what jobbot shows.

They live in memory, inside a Masker: never in the store, never in jobbot's own log.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable

from kubernetes.client.exceptions import ApiException

from core.errors import ExecutorError
from core.executors.k8s.api import KubeApi, Obj

# Keys of docker config Secrets (kubernetes.io/dockerconfigjson and dockercfg).
_DOCKER_CONFIG_KEYS = (".dockerconfigjson", ".dockercfg")
_DOCKER_SECRET_FIELDS = ("auth", "password", "identitytoken", "registrytoken")


class SecretMissing(ExecutorError):
    """A Secret a run or build names does not exist (HTTP 404)."""

    def __init__(self, namespace: str, name: str, named_by: str) -> None:
        self.where = f"{namespace}/{name}"
        super().__init__(f"Secret {self.where} does not exist, so the pod could not start: "
                         f"create it, or remove it from {named_by}")


async def secret_values(api: KubeApi, namespace: str, names: Iterable[str], *,
                        named_by: str = "the job's secrets") -> list[str]:
    """Every value of the named Secrets, decoded; raises ExecutorError naming the Secret that
    cannot be read (missing, or jobbot may not `get` it), so nothing runs unmasked.
    `named_by` says where the names come from, for the message."""
    values: list[str] = []
    for name in dict.fromkeys(names):
        try:
            secret = await api.read_secret(namespace, name)
        except ExecutorError as exc:
            raise ExecutorError(f"cannot read Secret {namespace}/{name} to mask its values: "
                                f"{exc}", retryable=exc.retryable) from exc
        except ApiException as exc:
            raise ExecutorError(f"cannot read Secret {namespace}/{name} to mask its values: "
                                f"HTTP {exc.status} {exc.reason}") from exc
        if secret is None:
            raise SecretMissing(namespace, name, named_by)
        values.extend(decoded_values(secret))
    return values


async def secret_keys(api: KubeApi, namespace: str, names: Iterable[str]) -> frozenset[str]:
    """The variable names the named Secrets hold (never their values). A Secret that cannot
    be read adds none: its run fails at launch anyway, saying why."""
    keys: set[str] = set()
    for name in dict.fromkeys(names):
        try:
            secret = await api.read_secret(namespace, name)
        except (ExecutorError, ApiException):
            continue
        for field in ("data", "stringData"):
            keys.update(key for key in (secret or {}).get(field) or {} if isinstance(key, str))
    return frozenset(keys)


def decoded_values(secret: Obj) -> list[str]:
    """The values of one Secret object: `data` (base64, as stored and decoded) and
    `stringData` (plain; only present in what is written, read defensively)."""
    values: list[str] = []
    for key, encoded in (secret.get("data") or {}).items():
        if not isinstance(encoded, str):
            continue
        values.append(encoded)
        try:
            text = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue  # binary: never matches decoded log text; its base64 form is masked
        values.append(text)
        values.extend(_docker_config_values(key, text))
    for key, text in (secret.get("stringData") or {}).items():
        if isinstance(text, str):
            values.append(text)
            values.extend(_docker_config_values(key, text))
    return values


def _docker_config_values(key: str, text: str) -> list[str]:
    """The credentials inside a docker config (the whole JSON is never printed as it is)."""
    if key not in _DOCKER_CONFIG_KEYS:
        return []
    try:
        config = json.loads(text)
    except ValueError:
        return []
    registries = config.get("auths", config) if isinstance(config, dict) else {}
    values: list[str] = []
    for entry in registries.values() if isinstance(registries, dict) else ():
        if not isinstance(entry, dict):
            continue
        for field in _DOCKER_SECRET_FIELDS:
            value = entry.get(field)
            if isinstance(value, str) and value:
                values.append(value)
        auth = entry.get("auth")
        if isinstance(auth, str):
            try:
                _, _, password = base64.b64decode(auth).decode("utf-8").partition(":")
            except (binascii.Error, ValueError):
                continue
            if password:
                values.append(password)
    return values
