"""Deterministic texts of the kinds memstream stores, to compare embedding backends.

``corpus(n)``: queries, assistant responses, tool calls, outcomes and notes, with numbers,
names, versions, paths, code and a few texts longer than the model's 256-token window.
``near_duplicate_pairs()``: paraphrases and look-alikes (same sentence, another number,
name or version; a related but different request) whose merge decision at the
near-duplicate threshold must not change with the backend.
"""

from __future__ import annotations

import random

NAMES = ["Alice", "Bruno", "Chen Wei", "Dagny", "Emeka", "Fatima", "Görkem", "Hiro",
         "Ingrid", "José", "Kalani", "Léa", "Mateusz", "Nkechi", "Olga", "Priya"]
SERVICES = ["api-gateway", "billing-worker", "search-indexer", "auth-service", "payments",
            "notification-hub", "ledger", "recommendation-engine", "etl-nightly", "web-frontend"]
TOOLS = ["kubectl", "terraform", "git", "psql", "docker", "pytest", "curl", "helm", "jq", "aws"]
PLACES = ["Lisbon", "Nairobi", "Osaka", "São Paulo", "Toronto", "Kraków", "Reykjavík", "Pune"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TOPICS = ["database migration", "flaky integration test", "memory leak", "TLS certificate",
          "rate limiter", "Kafka consumer lag", "Dockerfile", "CI pipeline", "cron schedule",
          "feature flag", "SQL index", "OAuth token refresh", "CSV import", "cache eviction"]
LANGS = ["Python", "Go", "Rust", "TypeScript", "Java", "SQL", "Bash"]
OUTCOMES = ["succeeded", "failed", "timed out", "was rolled back", "partially succeeded"]
PREFERENCES = ["dark mode", "tabs over spaces", "metric units", "short answers",
               "British spelling", "24-hour time", "vim keybindings", "no emojis"]


def _version(r: random.Random) -> str:
    return f"{r.randint(0, 12)}.{r.randint(0, 30)}.{r.randint(0, 40)}"


def _query(r: random.Random) -> str:
    forms = [
        "How do I fix the {topic} in {service} after upgrading to v{version}?",
        "Why does {tool} exit with code {code} when I run it against {service}?",
        "Can you explain how the {topic} works in our {lang} code?",
        "What's the fastest way to roll back {service} from {version} to the previous release?",
        "Remind me what {name} said about the {topic} on {weekday}.",
        "write a {lang} function that parses {n} rows of the {topic} report",
        "is it safe to bump {service} to {version} before the freeze on {weekday}?",
        "{tool} keeps failing with 'permission denied' on /var/lib/{service}/data — help",
    ]
    return r.choice(forms).format(**_fill(r))


def _response(r: random.Random) -> str:
    forms = [
        "The {topic} comes from {service} retrying every {n} ms; raise the backoff to {m} ms "
        "and cap retries at {k}. Version {version} already contains the fix, so upgrading "
        "should be enough.",
        "I checked the logs: {service} ran out of memory at {n} MiB after the {topic} job "
        "started. Setting the limit to {m} MiB and splitting the batch into {k} chunks stops it.",
        "Here is the {lang} version:\n\ndef handle(rows):\n    return [r for r in rows if "
        "r['count'] > {n}]\n\nIt keeps the rows above {n} and runs in O(n).",
        "{name} prefers {preference}, so I formatted the summary that way and kept it under "
        "{n} words.",
        "Short answer: yes. {service} {version} is compatible with the schema change, and the "
        "{topic} is unaffected because it reads only the first {k} columns.",
    ]
    return r.choice(forms).format(**_fill(r))


def _tool_call(r: random.Random) -> str:
    forms = [
        "{tool} apply -f deploy/{service}.yaml --namespace prod-{k}",
        '{{"tool": "{tool}", "args": {{"service": "{service}", "replicas": {k}, '
        '"version": "{version}"}}}}',
        "git commit -m \"{service}: fix {topic} (#{n})\"",
        "SELECT id, created_at FROM {service_sql}_events WHERE amount > {n} ORDER BY id "
        "LIMIT {k};",
        "curl -s -X POST https://{service}.internal/v1/jobs -d '{{\"retries\": {k}}}'",
        "docker run --rm -e WORKERS={k} {service}:{version} --port {port}",
    ]
    return r.choice(forms).format(**_fill(r))


def _outcome(r: random.Random) -> str:
    forms = [
        "Deploy of {service} {version} {outcome} after {n} seconds ({k} pods).",
        "Test run {outcome}: {n} passed, {k} failed, {m} skipped in {service}.",
        "Migration {n} on {service} {outcome}; {m} rows changed.",
        "The {topic} fix {outcome} on {weekday}; {name} confirmed it in {place}.",
    ]
    return r.choice(forms).format(**_fill(r))


def _note(r: random.Random) -> str:
    forms = [
        "{name} prefers {preference} and works from {place}.",
        "Standup moved to {weekday} at {hour}:{minute:02d}; {name} runs it.",
        "On-call for {service} this week is {name} (pager {n}).",
        "Budget for the {topic} project is {n} euros, approved by {name}.",
        "Note to self: the {service} dashboard lives at grafana/d/{code}/{service}.",
        "voice note: talked to {name} about the {topic}, follow up on {weekday}",
        "{name}'s flight to {place} lands at {hour}:{minute:02d} on {weekday}.",
    ]
    return r.choice(forms).format(**_fill(r))


def _fill(r: random.Random) -> dict[str, object]:
    service = r.choice(SERVICES)
    return {
        "name": r.choice(NAMES), "service": service, "service_sql": service.replace("-", "_"),
        "tool": r.choice(TOOLS), "place": r.choice(PLACES), "weekday": r.choice(WEEKDAYS),
        "topic": r.choice(TOPICS), "lang": r.choice(LANGS), "outcome": r.choice(OUTCOMES),
        "preference": r.choice(PREFERENCES), "version": _version(r),
        "n": r.randint(2, 99_999), "m": r.randint(2, 4096), "k": r.randint(1, 64),
        "code": r.randint(1, 255), "port": r.randint(1024, 65535), "hour": r.randint(0, 23),
        "minute": r.randint(0, 59),
    }


_KINDS = (_query, _response, _tool_call, _outcome, _note)


def corpus(n: int = 2200, seed: int = 15) -> list[str]:
    """``n`` texts, the same on every call: the five kinds in turn, 1 in 50 a long text
    (several responses joined, past the 256-token window) and 1 in 50 a short fragment."""
    r = random.Random(seed)
    texts: list[str] = []
    for i in range(n):
        if i % 50 == 7:
            texts.append(" ".join(_response(r) for _ in range(r.randint(6, 12))))
        elif i % 50 == 23:
            texts.append(r.choice(["ok", "thanks!", "yes, do it", r.choice(SERVICES),
                                   _version(r), "¿qué pasó?", "👍 ship it"]))
        else:
            texts.append(_KINDS[i % len(_KINDS)](r))
    return texts


# (a, b, kind): paraphrase, look-alike (one fact changed) or related (another request).
_PAIR_SEEDS = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("Deploy {service} {version} to staging", "Deploy {service} {version2} to staging"),
    ("{name} prefers {preference}.", "{name} likes {preference}."),
    ("{name} prefers {preference}.", "{name2} prefers {preference}."),
    ("Standup moved to {weekday} at 10:00.", "Standup moved to {weekday2} at 10:00."),
    ("Standup moved to {weekday} at 10:00.", "The standup now happens on {weekday} at 10:00."),
    ("Restart {service} after the {topic} fix.", "Restart {service2} after the {topic} fix."),
    ("Restart {service} after the {topic} fix.", "After the {topic} fix, restart {service}."),
    ("The {topic} in {service} is fixed in {version}.",
     "The {topic} in {service} was fixed in version {version}."),
    ("Budget for the {topic} project is {n} euros.",
     "Budget for the {topic} project is {m} euros."),
    ("{tool} exits with code {k} on {service}", "{tool} exits with code {k} on {service}!"),
    ("Why does {tool} fail on {service}?", "Why does {tool} keep failing on {service}?"),
    ("Why does {tool} fail on {service}?", "How do I install {tool} on {service}?"),
    ("{name}'s flight to {place} lands on {weekday}.",
     "{name}'s flight to {place2} lands on {weekday}."),
    ("On-call for {service} this week is {name}.", "{name} is on call for {service} this week."),
    ("Test run failed: {n} passed, {k} failed.", "Test run failed: {m} passed, {k} failed."),
    ("Use {preference} in every answer for {name}.", "Use {preference} in answers for {name}."),
    ("Remind me to call {name} on {weekday}.", "Remind me to email {name} on {weekday}."),
]


def near_duplicate_pairs(n: int = 360, seed: int = 16) -> list[tuple[str, str]]:
    """``n`` pairs of texts from the seeds above with varied fillings, the same every call."""
    r = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        a, b = _PAIR_SEEDS[len(pairs) % len(_PAIR_SEEDS)]
        fill = _fill(r)
        other = _fill(r)
        fill.update(name2=other["name"], service2=other["service"], place2=other["place"],
                    weekday2=other["weekday"], version2=_version(r))
        pairs.append((a.format(**fill), b.format(**fill)))
    return pairs
