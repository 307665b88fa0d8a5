"""Apache Kafka's jars, fetched with Maven from Maven Central into a cache in the repo.

:func:`kafka_classpath` returns the ``libs`` folder of one pinned Kafka version,
fetching ``org.apache.kafka:kafka_2.13`` and ``kafka-tools`` (the console consumer) with
their dependencies and an SLF4J binding the first time (``mvn dependency:copy-dependencies``
on a generated POM), and reusing it after. The cache is ``<repo>/.cache/kafka/<version>``
(gitignored); ``ARGBRIDGE_KAFKA_CACHE`` moves it. A file lock keeps two fetches of one
version (two test runs, a benchmark) from writing the same folder; a fetch that died half
way leaves no ``.complete`` marker and is redone.

Versions: :data:`NEWEST_4X` is the whole suite's broker; :data:`NEWEST_39` the most
deployed line, for the compatibility matrix (``make soak``). Kafka 4.x logs with Log4j 2,
3.9 with reload4j: :func:`log_config_args` writes the matching configuration.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NEWEST_4X = "4.4.0"
NEWEST_39 = "3.9.2"
#: Every version the tests know how to start, newest first.
VERSIONS = (NEWEST_4X, NEWEST_39)
FETCH_TIMEOUT = 900.0

_LOG4J2 = "2.25.5"
_BINDINGS = {
    # Kafka 4.x ships Log4j 2 and slf4j-api 1.7: the 1.x binding of Log4j 2.
    "4": [("org.apache.logging.log4j", "log4j-slf4j-impl", _LOG4J2)],
    # Kafka 3.9 ships reload4j and its SLF4J binding already.
    "3": [],
}


class KafkaUnavailable(RuntimeError):
    """Java or Maven is missing, or Maven could not fetch the jars (the message says which)."""


@dataclass(frozen=True)
class KafkaDist:
    version: str
    libs: Path

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def classpath(self) -> str:
        return f"{self.libs}/*"


def cache_root() -> Path:
    return Path(os.environ.get("ARGBRIDGE_KAFKA_CACHE", REPO / ".cache" / "kafka"))


def missing_tools() -> list[str]:
    """The command-line tools the Apache Kafka fixture needs and this machine lacks."""
    return [tool for tool in ("java", "mvn") if shutil.which(tool) is None]


def _pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.kafka", "kafka-tools", version),
        *_BINDINGS[version.split(".", 1)[0]],
    ]
    body = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>argbridge.tests</groupId><artifactId>kafka-dist</artifactId>"
        f"<version>1</version><dependencies>{body}</dependencies></project>\n"
    )


def kafka_dist(version: str = NEWEST_4X) -> KafkaDist:
    """The jars of ``version``, fetched once into the cache (raises :class:`KafkaUnavailable`)."""
    if version not in VERSIONS:
        raise KafkaUnavailable(f"Kafka {version} is not pinned here (known: {VERSIONS})")
    home = cache_root() / version
    libs = home / "libs"
    missing = missing_tools()
    if (home / ".complete").exists() and "java" not in missing:
        return KafkaDist(version, libs)
    if missing:
        raise KafkaUnavailable(f"Apache Kafka needs {' and '.join(missing)} on PATH")
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / ".complete").exists():
            _fetch(version, home, libs)
    return KafkaDist(version, libs)


def _fetch(version: str, home: Path, libs: Path) -> None:
    shutil.rmtree(libs, ignore_errors=True)
    (home / "pom.xml").write_text(_pom(version))
    started = time.monotonic()
    print(f"fetching Apache Kafka {version} jars with Maven into {libs} (once) ...", flush=True)
    proc = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        timeout=FETCH_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise KafkaUnavailable(f"mvn could not fetch Kafka {version}:\n" + "\n".join(tail))
    (home / ".complete").write_text(f"{time.time()}\n")
    print(f"fetched Kafka {version} in {time.monotonic() - started:.1f} s", flush=True)


def log_config_args(dist: KafkaDist, log_file: Path) -> list[str]:
    """JVM flags that send the broker's log to ``log_file`` (INFO, one file)."""
    conf = log_file.parent / f"{log_file.stem}-log4j.properties"
    if dist.major >= 4:
        conf.write_text(
            "status = error\n"
            "appender.file.type = File\n"
            "appender.file.name = file\n"
            f"appender.file.fileName = {log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = file\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = WARN\n"
        )
        return [f"-Dlog4j2.configurationFile={conf}"]
    conf.write_text(
        "log4j.rootLogger=INFO, file\n"
        "log4j.appender.file=org.apache.log4j.FileAppender\n"
        f"log4j.appender.file.File={log_file}\n"
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.state.change.logger=WARN\n"
    )
    return [f"-Dlog4j.configuration=file:{conf}"]
