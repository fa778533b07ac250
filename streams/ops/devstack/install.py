"""Install Kafka and Apicurio Registry from Maven Central into a cache outside the repo."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from streams.ops.devstack import versions
from streams.ops.devstack.exceptions import DevStackError

logger = logging.getLogger(__name__)

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>memstream.devstack</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""
_DEP = (
    "    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
    "<version>{v}</version></dependency>"
)


@dataclass(frozen=True)
class Installation:
    """Where the installed stack lives."""

    kafka_libs: Path
    registry_jar: Path


def find_java(java_home: Path | None = None) -> Path:
    """The ``java`` to run the stack with, checked to be at least MIN_JAVA."""
    candidates = [java_home / "bin" / "java"] if java_home else []
    found = shutil.which("java")
    candidates += [Path(found)] if found else []
    for java in candidates:
        if java.exists() and java_major(java) >= versions.MIN_JAVA:
            return java
    raise DevStackError(
        f"Java {versions.MIN_JAVA}+ not found: install a JDK (Debian: apt-get install "
        "openjdk-17-jdk-headless) or set MEMSTREAM_JAVA_HOME to one"
    )


def java_major(java: Path) -> int:
    """Major version of a ``java`` binary (0 when it cannot tell)."""
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(match.group(1)) if match else 0


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise DevStackError(
            "Maven (mvn) not found: it fetches Kafka and the registry from Maven Central. "
            "Install it (Debian: apt-get install maven) and run the command again"
        )
    return mvn


def _run_maven(args: list[str], cwd: Path, what: str) -> None:
    cmd = [_mvn(), "-B", "-q", *args]
    logger.info("fetching %s from Maven Central", what)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise DevStackError(
            f"downloading {what} failed (mvn exit {proc.returncode}).\n{tail}\n"
            f"Retry by hand with:\n  cd {cwd} && {' '.join(cmd)}"
        )


def install_kafka(cache_dir: Path) -> Path:
    """Kafka's jars (broker, tools, log binding) in ``<cache>/kafka-<v>/libs``."""
    home = cache_dir / f"kafka-{versions.KAFKA_VERSION}"
    libs = home / "libs"
    marker = home / ".installed"
    if marker.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    deps = "\n".join(
        _DEP.format(g=g, a=a, v=v) for g, a, v in (c.split(":") for c in versions.KAFKA_ARTIFACTS)
    )
    (home / "pom.xml").write_text(_POM.format(deps=deps), encoding="utf-8")
    tmp = home / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    _run_maven(
        ["dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
        home,
        f"Apache Kafka {versions.KAFKA_VERSION}",
    )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.write_text(versions.KAFKA_VERSION, encoding="utf-8")
    return libs


def install_registry(cache_dir: Path) -> Path:
    """Apicurio Registry's runner jar in ``<cache>/apicurio-<v>/``."""
    home = cache_dir / f"apicurio-{versions.APICURIO_VERSION}"
    jar = home / f"apicurio-registry-app-{versions.APICURIO_VERSION}-runner.jar"
    if (home / ".installed").exists() and jar.exists():
        return jar
    download = cache_dir / "downloads"
    download.mkdir(parents=True, exist_ok=True)
    _run_maven(
        [
            "dependency:copy",
            f"-Dartifact={versions.APICURIO_ARTIFACT}",
            f"-DoutputDirectory={download}",
        ],
        download,
        f"Apicurio Registry {versions.APICURIO_VERSION}",
    )
    archive = download / f"apicurio-registry-app-{versions.APICURIO_VERSION}-all.tar.gz"
    tmp = cache_dir / f"apicurio-{versions.APICURIO_VERSION}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    if not (tmp / jar.name).exists():
        raise DevStackError(f"{archive} does not contain {jar.name}; delete it and retry")
    shutil.rmtree(home, ignore_errors=True)
    tmp.rename(home)
    (home / ".installed").write_text(versions.APICURIO_VERSION, encoding="utf-8")
    archive.unlink(missing_ok=True)
    return jar


def install(cache_dir: Path) -> Installation:
    """Install both parts of the stack if they are not in the cache yet."""
    return Installation(
        kafka_libs=install_kafka(cache_dir), registry_jar=install_registry(cache_dir)
    )
