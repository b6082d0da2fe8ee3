"""Environment variable names: their syntax, jobbot's own, and those that change how programs
load or start (which neither app.yaml `env:` nor a run may set)."""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names jobbot sets itself in every run (JOBBOT_APP, JOBBOT_RUN_ID, ...).
RESERVED_PREFIX = "JOBBOT_"

# Names read by loaders, shells, language runtimes and the tools that start a job's command to
# decide which program or code runs: whoever sets one runs their own code with the job's
# secrets. A trailing `*` matches any name with that prefix. Matched case-insensitively (npm
# reads its variables so, and refusing `path` costs nothing).
LOADER_VARIABLES: tuple[str, ...] = (
    # Which program a name starts.
    "PATH",
    # The dynamic loader (glibc, musl, macOS) and the glibc variables it drops for setuid
    # programs: libraries preloaded or searched, codecs and locales loaded from a directory,
    # host names resolved elsewhere, tunables (CVE-2023-4911).
    "LD_*", "DYLD_*", "GLIBC_TUNABLES", "GCONV_PATH", "GETCONF_DIR", "LOCPATH", "NLSPATH",
    "MALLOC_TRACE", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "RESOLV_HOST_CONF",
    "NIS_PATH", "TZDIR",
    # Shells: files sourced at start, options, traces and word splitting.
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "BASH_FUNC_*", "PS4", "PROMPT_COMMAND", "IFS",
    "CDPATH", "ZDOTDIR",
    # Language runtimes: options, module search paths and start-up code.
    "PYTHON*", "NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB", "RUBYOPT", "RUBYLIB",
    "PHPRC", "PHP_INI_SCAN_DIR", "LUA_INIT*", "LUA_PATH*", "LUA_CPATH*",
    # OpenSSL's configuration loads engines and providers (shared libraries).
    "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
    # Package managers that start a job's scripts take their whole configuration from these
    # (the shell that runs scripts, the Yarn release file to execute, node options).
    "NPM_CONFIG_*", "YARN_*",
    # Git runs these programs (ssh, credential prompts, proxies) and reads config from them.
    "GIT_SSH", "GIT_SSH_COMMAND", "GIT_PROXY_COMMAND", "GIT_ASKPASS", "SSH_ASKPASS",
    "GIT_EXEC_PATH", "GIT_CONFIG*",
)
_EXACT = frozenset(n for n in LOADER_VARIABLES if not n.endswith("*"))
_PREFIXES = tuple(n[:-1] for n in LOADER_VARIABLES if n.endswith("*"))


def is_env_name(name: str) -> bool:
    """Letters, digits and '_', not starting with a digit: the whole name, nothing after it."""
    return _NAME.fullmatch(name) is not None


def is_loader_name(name: str) -> bool:
    """True for PATH, LD_PRELOAD, PYTHONPATH and the other names in LOADER_VARIABLES."""
    upper = name.upper()
    return upper in _EXACT or upper.startswith(_PREFIXES)


def forbidden(name: str) -> str | None:
    """Why neither app.yaml nor a run may set `name` (to follow the name in a sentence), or
    None if a job may declare it."""
    if name.upper().startswith(RESERVED_PREFIX):
        return f"is set by jobbot itself ({RESERVED_PREFIX} variables are jobbot's)"
    if is_loader_name(name):
        return "changes how programs are loaded or started"
    return None
