"""app.yaml validation: every field of the format, and errors that say file:line: key: what."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError, NotFound
from core.parameters import ParameterErrors, check_parameters
from core.spec import load_app, parse_app

ROOT = Path(__file__).resolve().parents[2]

FULL = """\
app: shop
defaults:
  time_limit: 3600
  notify: {slack_channel: "#deploys"}
kubernetes: {namespace: shop-jobs, service_account_name: jobs-runner}
builds:
  - name: api-build
    dockerfile: Dockerfile
    context: .
    image: registry.example.com/shop/api
    branches: [main]
    registry_secret: registry-credentials
jobs:
  - name: db-migrate
    image_from_build: api-build
    command: [yarn, migrate]
    env: {RAILS_ENV: production, PORT: 8080}
    secrets: [db-credentials]
    run_on_image_change: cd
    restart_policy: OnFailure
    backoff_limit: 3
    time_limit: 480
    stop_grace_period: 30
    parallelism: 1
    completions: 1
    ttl: 3600
    resources: {cpu: 500m, memory: 512Mi}
    security_context: {run_as_user: 1000}
    allow: {slack_users: [U123], slack_usergroups: [S456], slack_channels: [C789],
            github_permission: write}
    confirm: true
    notify: {slack_channel: "#db", on: [start, failure, success]}
    pull_requests: false
    fork_secrets: false
    parameters:
      - {name: TARGET, type: choice, choices: [staging, production], required: true}
      - {name: STEPS, type: int, default: 1, description: "how many migrations"}
      - {name: TOKEN, type: string, pattern: "^[a-z0-9]+$", secret: true}
    lock: db-prod
  - name: nightly-report
    image: python:3.12-slim
    command: [python, report.py]
    schedule: "0 3 * * *"
    timezone: Europe/Berlin
    concurrency_policy: Forbid
    starting_deadline: 300
    suspend: false
    history: {succeeded: 20, failed: 20}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_app(text, "app.yaml")
    return [str(p) for p in caught.value.problems]


def test_the_design_brief_example_is_valid() -> None:
    app = parse_app(FULL)
    assert app.app == "shop" and app.namespace == "shop-jobs"
    migrate = app.job("db-migrate")
    assert migrate.command == ("yarn", "migrate")
    assert migrate.env == {"RAILS_ENV": "production", "PORT": "8080"}
    assert migrate.time_limit == 480 and migrate.backoff_limit == 3
    assert migrate.notify.slack_channel == "#db"
    assert migrate.lock == "db-prod" and app.job("nightly-report").lock is None
    assert migrate.allow.slack_users == ("U123",)
    target, steps, token = migrate.parameters
    assert (target.type, target.choices, target.required) == (
        "choice", ("staging", "production"), True)
    assert (steps.type, steps.default, steps.description) == ("int", "1", "how many migrations")
    assert (token.pattern, token.secret) == ("^[a-z0-9]+$", True)
    report = app.job("nightly-report")
    assert report.schedule == ("0 3 * * *",)
    assert report.time_limit == 3600  # from defaults
    assert report.notify.slack_channel == "#deploys"  # from defaults
    assert report.starting_deadline == 300
    assert app.build("api-build").branches == ("main",)


def test_the_repository_example_app_is_valid() -> None:
    app = load_app(ROOT / "app.yaml")
    assert {job.name for job in app.jobs} >= {"hello", "flaky", "broken", "slow", "report"}


def test_durations_accept_units() -> None:
    app = parse_app("""app: a
jobs:
  - {name: j, image: x, command: [x], time_limit: 1h30m, stop_grace_period: 90s, ttl: 2d}
""")
    job = app.job("j")
    assert (job.time_limit, job.stop_grace_period, job.ttl) == (5400, 90, 172800)


def test_a_schedule_may_be_a_list_and_use_aliases_and_h() -> None:
    job = parse_app("""app: a
jobs:
  - {name: j, image: x, command: [x], schedule: ["@hourly", "H 3 * * 1-5"]}
""").job("j")
    assert job.schedule == ("@hourly", "H 3 * * 1-5")


def test_unknown_keys_name_the_line_and_what_is_allowed() -> None:
    found = problems("app: a\njobs:\n  - name: j\n    image: x\n    command: [x]\n"
                     "    retries: 3\n")
    assert len(found) == 1
    assert found[0].startswith("app.yaml:6: jobs[j].retries: unknown key 'retries' "
                               "(did you mean 'backoff_limit'?); allowed: ")
    assert "backoff_limit" in found[0]


def test_several_errors_are_reported_at_once_in_line_order() -> None:
    found = problems("""app: Shop_App
builds:
  - {name: api, image: "registry.example.com/api:latest"}
jobs:
  - name: Bad_Name
    image: x
    command: migrate
  - name: cron
    image: x
    command: [x]
    schedule: "61 * * * *"
    timezone: Mars/Olympus
    time_limit: forever
    image_from_build: apii
""")
    assert found == [
        "app.yaml:1: app: 'Shop_App' is not a valid name: use at most 63 lowercase letters, "
        "digits and '-', starting and ending with a letter or digit",
        "app.yaml:3: builds[0].image: 'registry.example.com/api:latest' is not an image name "
        "without a tag (it is built as <image>:<sha>)",
        "app.yaml:5: jobs[Bad_Name].name: 'Bad_Name' is not a valid name: use at most 63 "
        "lowercase letters, digits and '-', starting and ending with a letter or digit",
        "app.yaml:7: jobs[Bad_Name].command: give the command as a list, e.g. [yarn, migrate]: "
        "it is never run through a shell",
        "app.yaml:11: jobs[cron].schedule: '61 * * * *' is not a valid cron expression",
        "app.yaml:12: jobs[cron].timezone: unknown time zone 'Mars/Olympus'",
        "app.yaml:13: jobs[cron].time_limit: 'forever' is not a duration: use whole seconds "
        "(480) or a string like 90s, 15m, 1h30m or 2d",
        "app.yaml:14: jobs[cron].image_from_build: give either image or image_from_build",
        "app.yaml:14: jobs[cron].image_from_build: no build named 'apii' (did you mean 'api'?); "
        "builds: api",
    ]


@pytest.mark.parametrize(("job", "expected"), [
    ("parallelism: 3\n    completions: 2", "jobs[j].parallelism: parallelism 3 is more than "
     "completions 2"),
    ("concurrency_policy: Replace", "jobs[j].concurrency_policy: concurrency_policy Replace only "
     "applies to jobs with a schedule"),
    ("starting_deadline: 60", "jobs[j].starting_deadline: starting_deadline only applies to "
     "jobs with a schedule"),
    ("fork_secrets: true", "jobs[j].fork_secrets: only applies with pull_requests: true"),
    ("run_on_image_change: cd", "jobs[j].run_on_image_change: only applies to jobs with "
     "image_from_build"),
    ("restart_policy: Always", "jobs[j].restart_policy: 'Always' is not allowed; input should "
     "be 'OnFailure' or 'Never'"),
    ("backoff_limit: -1", "jobs[j].backoff_limit: -1 is too small: the least allowed is 0"),
    ("parallelism: 101", "jobs[j].parallelism: 101 is too large: the most allowed is 100"),
    ("backoff_limit: lots", "jobs[j].backoff_limit: 'lots' is not a whole number"),
    ("schedule: '0 3 * *'", "jobs[j].schedule: '0 3 * *' has 4 fields; a schedule has 5 "
     "(minute hour day-of-month month day-of-week), e.g. '0 3 * * *'"),
    ("schedule: '@reboot'", "jobs[j].schedule: unknown schedule '@reboot'; allowed: @yearly, "
     "@annually, @monthly, @weekly, @daily, @midnight, @hourly or 5 cron fields"),
    ("schedule: '* * * * *'\n    timezone: Berlin", "jobs[j].timezone: unknown time zone "
     "'Berlin' (IANA names look like Europe/Berlin or America/New_York)"),
    ("env: {DEBUG: true}", "jobs[j].env.DEBUG: True must be quoted: environment values are "
     "strings"),
    ("env: {9LIVES: x}", "jobs[j].env.9LIVES: not a valid environment variable name: use "
     "letters, digits and '_', not starting with a digit"),
    ("resources: {cpu: lots}", "jobs[j].resources.cpu: 'lots' is not a Kubernetes quantity "
     "(e.g. 500m, 1, 512Mi, 2Gi)"),
    ("secrets: [Bad_Secret]", "jobs[j].secrets[0]: 'Bad_Secret' is not a valid Secret name: "
     "use at most 253 lowercase letters"),
    ("notify: {on: [always]}", "jobs[j].notify.on[0]: 'always' is not allowed; input should be "
     "'start', 'retry', 'success' or 'failure'"),
    ("allow: {github_permission: god}", "jobs[j].allow.github_permission: 'god' is not "
     "allowed; input should be 'read', 'triage', 'write', 'maintain' or 'admin'"),
    ("time_limit: 0", "jobs[j].time_limit: must be more than 0 seconds"),
    ("image: NOT AN IMAGE", "jobs[j].image: 'NOT AN IMAGE' is not an image reference, such as "
     "python:3.12-slim"),
    ("security_context: {run_as_root: true}", "jobs[j].security_context.run_as_root: unknown "
     "key 'run_as_root'"),
    ("lock: DB_Prod", "app.yaml:6: jobs[j].lock: 'DB_Prod' is not a valid name: use at most 63 "
     "lowercase letters, digits and '-', starting and ending with a letter or digit (a lock "
     "is named like a job, e.g. db-prod)"),
    ("lock: [db]", "app.yaml:6: jobs[j].lock: Input should be a valid string"),
    ("lock: " + "x" * 64, "jobs[j].lock: 'xxxxxxxx"),
])
def test_each_kind_of_problem(job: str, expected: str) -> None:
    found = problems(f"app: a\njobs:\n  - name: j\n    image: x\n    command: [x]\n    {job}\n")
    assert any(expected in p for p in found), found
    assert all(p.startswith("app.yaml:") for p in found)


_LOADER = ("changes how programs are loaded or started: neither env nor a run may set it (set "
           "it in the image or the command instead)")


@pytest.mark.parametrize(("env", "expected"), [
    ("PATH: /tmp/bin", "jobs[j].env.PATH: PATH " + _LOADER),
    ("LD_PRELOAD: /tmp/x.so", "jobs[j].env.LD_PRELOAD: LD_PRELOAD " + _LOADER),
    ("PYTHONPATH: /tmp", "jobs[j].env.PYTHONPATH: PYTHONPATH " + _LOADER),
    ("NODE_OPTIONS: --require=/tmp/x.js", "jobs[j].env.NODE_OPTIONS: NODE_OPTIONS " + _LOADER),
    ("BASH_ENV: /tmp/x.sh", "jobs[j].env.BASH_ENV: BASH_ENV " + _LOADER),
    ("JAVA_TOOL_OPTIONS: -javaagent:/tmp/a.jar",
     "jobs[j].env.JAVA_TOOL_OPTIONS: JAVA_TOOL_OPTIONS " + _LOADER),
    ("dyld_insert_libraries: /tmp/x",
     "jobs[j].env.dyld_insert_libraries: dyld_insert_libraries " + _LOADER),
    ("JOBBOT_RUN_ID: forged", "jobs[j].env.JOBBOT_RUN_ID: JOBBOT_RUN_ID is set by jobbot "
     "itself (JOBBOT_ variables are jobbot's): neither env nor a run may set it"),
    ('"KEY\\n": x', "jobs[j].env.'KEY\\n': not a valid environment variable name"),
    ('TOKEN: "a\\0b"', "jobs[j].env.TOKEN: the value contains a NUL character, which no "
     "environment variable can hold"),
])
def test_env_may_not_declare_names_that_change_how_programs_start(
        env: str, expected: str) -> None:
    found = problems(f"app: a\njobs:\n  - name: j\n    image: x\n    command: [x]\n"
                     f"    env:\n      {env}\n      GREETING: hi\n")
    assert any(p.startswith(f"app.yaml:7: {expected}") for p in found), found
    assert len(found) == 1, found


def test_a_loader_name_in_defaults_is_reported_where_it_is_written() -> None:
    found = problems("app: a\ndefaults:\n  env: {LD_LIBRARY_PATH: /tmp}\njobs:\n"
                     "  - {name: j, image: x, command: [x]}\n")
    assert found == ["app.yaml:3: jobs[j].env.LD_LIBRARY_PATH: LD_LIBRARY_PATH " + _LOADER]


def test_names_that_only_look_like_loader_names_are_fine() -> None:
    app = parse_app("app: a\njobs:\n  - name: j\n    image: x\n    command: [x]\n"
                    "    env: {NODE_ENV: production, LDAP_URL: ldap://x, PATH_PREFIX: /x,\n"
                    "          JAVA_HOME: /opt/java, MALLOC_ARENA_MAX: '2', TMPDIR: /tmp,\n"
                    "          RAILS_ENV: production, SSL_CERT_FILE: /etc/ca.pem}\n")
    assert set(app.job("j").env) == {"NODE_ENV", "LDAP_URL", "PATH_PREFIX", "JAVA_HOME",
                                     "MALLOC_ARENA_MAX", "TMPDIR", "RAILS_ENV", "SSL_CERT_FILE"}


def test_kubernetes_and_build_names_and_paths_are_checked() -> None:
    found = problems("""app: a
kubernetes: {service_account_name: Bad_SA}
builds:
  - name: web
    image: ghcr.io/acme/web
    context: ../..
    dockerfile: /etc/Dockerfile
    registry_secret: Bad_Secret
jobs:
  - {name: j, image: x, command: [x]}
""")
    assert any(p.startswith("app.yaml:2: kubernetes.service_account_name: 'Bad_SA' is not a "
                            "valid ServiceAccount name") for p in found), found
    assert "app.yaml:6: builds[0].context: '../..' leaves the repository: give a path " \
           "inside it, such as ." in found, found
    assert any(p.startswith("app.yaml:7: builds[0].dockerfile: '/etc/Dockerfile' leaves")
               for p in found), found
    assert any(p.startswith("app.yaml:8: builds[0].registry_secret: 'Bad_Secret' is not a "
                            "valid Secret name") for p in found), found


def test_duplicate_names_and_keys() -> None:
    found = problems("""app: a
jobs:
  - {name: j, image: x, command: [x]}
  - {name: j, image: x, command: [y]}
  - name: k
    image: x
    image: y
    command: [x]
""")
    assert "app.yaml:4: jobs[j].name: job 'j' is defined twice" in found
    assert "app.yaml:7: jobs[k].image: this key is given twice in the same mapping" in found


def test_defaults_are_merged_and_their_errors_point_at_defaults() -> None:
    found = problems("""app: a
defaults:
  stop_grace_period: soon
  name: nope
jobs:
  - {name: j, image: x, command: [x]}
""")
    assert any(p.startswith("app.yaml:3: defaults.stop_grace_period: 'soon' is not a duration")
               for p in found)
    assert any(p.startswith("app.yaml:4: defaults.name: unknown key 'name'") for p in found)


def test_schedule_settings_inherited_from_defaults_are_fine_without_a_schedule() -> None:
    app = parse_app("""app: a
defaults: {timezone: Europe/Berlin, concurrency_policy: Forbid}
jobs:
  - {name: cron, image: x, command: [x], schedule: "0 3 * * *"}
  - {name: manual, image: x, command: [x]}
""")
    assert app.job("cron").timezone == "Europe/Berlin"
    assert app.job("manual").concurrency_policy == "Forbid"


@pytest.mark.parametrize(("text", "expected"), [
    ("", "app.yaml: the file is empty; it needs at least `app:` and `jobs:`"),
    ("- just\n- a list\n", "app.yaml:1: the top level must be a mapping with `app:` and `jobs:`"),
    ("app: a\njobs: [\n", "app.yaml:3: not valid YAML: expected the node content, but found "
     "'<stream end>'"),
    ("jobs: []\n", "app.yaml:1: app: is required"),
    ("app: a\njobs:\n  - {name: j}\n", "app.yaml:3: jobs[j].command: is required"),
    ("app: a\njobs:\n  - {name: j, image: x, command: []}\n",
     "app.yaml:3: jobs[j].command: must not be empty"),
])
def test_structural_problems(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_app(tmp_path / "nope.yaml")


def test_unknown_job_suggests_the_closest_name() -> None:
    app = parse_app(FULL)
    with pytest.raises(NotFound, match=r"no job 'db-migrat' in app 'shop' \(did you mean "):
        app.job("db-migrat")


PARAMETER_PROBLEMS = """app: a
jobs:
  - name: migrate
    image: x
    command: [x]
    env: {MODE: fast}
    parameters:
      - {name: STEPS, type: int, default: two}
      - {name: TOKEN, pattern: "^[a-z]+$", secret: true, default: abc}
      - {name: MODE}
      - {name: LD_PRELOAD}
      - {name: JOBBOT_RUN_ID}
      - {name: 9LIVES}
      - {name: X, type: int, choices: [1, 2], colour: red}
      - {name: Y, pattern: "["}
      - {name: Z, type: choice}
      - {name: W, type: bool, pattern: "x"}
      - {name: V, type: choice, choices: [a, b], default: c}
      - {name: U, type: float}
      - {name: STEPS}
      - {name: T, type: int, choices: [1, 2]}
  - name: nightly
    image: x
    command: [x]
    schedule: "0 3 * * *"
    parameters: [{name: A, required: true}, {name: B, required: true, default: b}]
"""


def test_parameters_are_checked_with_file_line_and_key() -> None:
    found = problems(PARAMETER_PROBLEMS)
    prefix = "app.yaml:{}: jobs[migrate].parameters[{}]."
    expected = [
        (8, 0, "default: the default does not fit the parameter: 'two' is not a whole number"),
        (9, 1, "default: a secret parameter has no default: it would be readable in app.yaml"),
        (10, 2, "name: MODE is also in env: give its default value in the parameter instead"),
        (11, 3, "name: LD_PRELOAD changes how programs are loaded or started: no run may set "
                "it"),
        (12, 4, "name: JOBBOT_RUN_ID is set by jobbot itself (JOBBOT_ variables are jobbot's): "
                "no run may set it"),
        (13, 5, "name: '9LIVES' is not a valid environment variable name: use letters, digits "
                "and '_', not starting with a digit"),
        (14, 6, "colour: unknown key 'colour'; allowed: choices, default, description, name, "
                "pattern, required, secret, type"),
        (15, 7, "pattern: '[' is not a regular expression: unterminated character set at "
                "position 0"),
        (16, 8, "choices: type choice needs choices, e.g. [staging, production]"),
        (17, 9, "pattern: only applies to type string, not bool"),
        (18, 10, "default: the default does not fit the parameter: 'c' is not one of a, b"),
        (19, 11, "type: 'float' is not allowed; input should be 'string', 'int', 'bool' or "
                 "'choice'"),
        (20, 12, "name: parameter STEPS is defined twice"),
        (21, 13, "choices: only apply to type choice, not int"),
    ]
    for line, index, message in expected:
        assert prefix.format(line, index) + message in found, (message, found)
    assert ("app.yaml:26: jobs[nightly].parameters[0].required: A is required and has no "
            "default, but scheduled runs give no parameters: add a default") in found
    assert not any("parameters[1]" in p and "nightly" in p for p in found)


def test_parameter_values_are_converted_and_checked_by_one_validator() -> None:
    job = parse_app(FULL).job("db-migrate")
    checked = check_parameters(job, {"TARGET": "production", "STEPS": " 007 ",
                                     "TOKEN": "abc123", "RAILS_ENV": "staging"})
    assert checked.values == {"TARGET": "production", "STEPS": "7", "RAILS_ENV": "staging"}
    assert checked.secrets == {"TOKEN": "abc123"}
    assert checked.shown()["TOKEN"] == "********" and "abc123" not in repr(checked)
    with pytest.raises(ParameterErrors) as caught:
        check_parameters(job, {"STEPS": "1.5", "TOKEN": "Secret-Value"})
    assert caught.value.errors == {
        "TARGET": "is required", "STEPS": "'1.5' is not a whole number",
        "TOKEN": "the value does not match the pattern ^[a-z0-9]+$"}
    assert "Secret-Value" not in str(caught.value)
