"""`docker compose up`, retraining in the trainer container, hot swap and pin, on a real engine.

Each test starts its own compose project (a unique name, images named after it, a free host
port, a temporary copy of models/ as the registry, so the repository's models/ is never written)
and always takes it down with `docker compose down -v` and removes its images' tags. Without a
Docker engine the tests skip, unless CI is set: then they fail. SCRATCHNET_DOCKER_ENGINE_SCRIPT
names a script that brings an engine up first; SCRATCHNET_PYTHON_IMAGE the base image to build
on. Unset, the images build on local/python-base:bookworm when the engine has it (that script
builds it where nothing can be pulled), else on the compose file's own base (PYTHON_IMAGE,
default python:3.12-slim).
"""
import base64
import gzip
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
LOCAL_PYTHON_IMAGE = "local/python-base:bookworm"
MODEL = "mnist"
ADMIN_TOKEN = "docker-test-" + secrets.token_hex(8)
CONTAINER_UID = 1000  # the image's user; a registry owned by root is handed to it


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def docker_engine() -> None:
    """A working `docker` and `docker compose`, brought up by the engine script when named."""
    script = os.environ.get("SCRATCHNET_DOCKER_ENGINE_SCRIPT")
    if script:
        try:
            done = subprocess.run([script], capture_output=True, text=True, timeout=900)
        except OSError as error:
            _unavailable(f"the Docker engine script {script} could not run: {error}")
        if done.returncode != 0:
            _unavailable(f"the Docker engine script {script} failed: {done.stderr.strip()[-2000:]}")
    if shutil.which("docker") is None:
        _unavailable("no `docker` command (set SCRATCHNET_DOCKER_ENGINE_SCRIPT to bring one up)")
    for check in (["docker", "info"], ["docker", "compose", "version"]):
        done = subprocess.run(check, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            _unavailable(f"`{' '.join(check)}` failed: {done.stderr.strip()[-500:]}")


def _base_image() -> str | None:
    """The base image to build on, or None to leave it to the compose file: only an engine set up
    for it has the local image, and building FROM it elsewhere fails to pull."""
    if os.environ.get("SCRATCHNET_PYTHON_IMAGE"):
        return os.environ["SCRATCHNET_PYTHON_IMAGE"]
    local = subprocess.run(["docker", "image", "inspect", LOCAL_PYTHON_IMAGE], capture_output=True, timeout=60)
    return LOCAL_PYTHON_IMAGE if local.returncode == 0 else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """One compose project: runs `docker compose` commands and times each step."""

    def __init__(self, registry: Path, files: list[str], port: int):
        self.project = f"scratchnet-test-{os.getpid()}-{secrets.token_hex(3)}"
        self.registry = registry
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.files = files
        self.timings: dict[str, float] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        self.env.update(
            COMPOSE_PROJECT_NAME=self.project,
            SCRATCHNET_IMAGE_PREFIX=self.project,  # another checkout's run on this engine has its own
            SCRATCHNET_MODELS_DIR=str(registry),
            SCRATCHNET_PORT=str(port),
            SCRATCHNET_ADMIN_TOKEN=ADMIN_TOKEN,
            SCRATCHNET_POLL_INTERVAL="1",
        )
        base_image = _base_image()
        if base_image:
            self.env["PYTHON_IMAGE"] = base_image
        if os.geteuid() == 0:
            self.env.update(SCRATCHNET_UID=str(CONTAINER_UID), SCRATCHNET_GID=str(CONTAINER_UID))
        else:
            self.env.update(SCRATCHNET_UID=str(os.getuid()), SCRATCHNET_GID=str(os.getgid()))

    def command(self, *args: str) -> list[str]:
        command = ["docker", "compose", "--project-directory", str(REPO)]
        for file in self.files:
            command += ["-f", str(REPO / file)]
        return command + list(args)

    def image(self, service: str) -> str:
        """The tag the compose files give this project's image of ``service``."""
        return f"{self.project}-{service}:latest"

    def take_down(self, *options: str) -> None:
        """`down -v`, then the project's image tags. --no-prune keeps the layers beneath a tag,
        which are the next build's cache: a plain `docker image rm` deletes every untagged one."""
        self.compose(*options, "down", "--volumes", "--remove-orphans", "--timeout", "10",
                     step="down -v", timeout=180, check=False)
        tags = [self.image(service) for service in ("api", "trainer", "lb")]
        subprocess.run(["docker", "image", "rm", "--no-prune", *tags], capture_output=True, timeout=120)

    def compose(self, *args: str, step: str | None = None, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess:
        start = time.monotonic()
        done = subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if step:
            self.timings[step] = time.monotonic() - start
        if check and done.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "80", check=False).stdout
            pytest.fail(f"`docker compose {' '.join(args)}` exited {done.returncode}:\n"
                        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n--- logs ---\n{logs[-6000:]}")
        return done

    def report(self, capsys, title: str, extra: dict) -> None:
        lines = [f"{title}:"] + [f"  {step:<28} {seconds:7.1f} s" for step, seconds in self.timings.items()]
        lines += [f"  {key:<28} {value}" for key, value in extra.items()]
        with capsys.disabled():
            print("\n" + "\n".join(lines))
        out = REPO / "test-artifacts"
        out.mkdir(exist_ok=True)
        (out / f"docker-{title.replace(' ', '-')}.json").write_text(
            json.dumps({"timings_s": self.timings, **extra}, indent=2) + "\n")


def _registry_copy(tmp_path: Path) -> Path:
    """A private copy of models/ that the containers' user may write (new versions, serving.json).

    Without serving.json: the test starts with nothing pinned, so the latest version serves."""
    registry = tmp_path / "models"
    shutil.copytree(REPO / "models", registry, ignore=shutil.ignore_patterns(".tmp-*", "serving.json"))
    assert (registry / MODEL).is_dir(), f"models/{MODEL} (the committed baseline) is missing"
    if os.geteuid() == 0:
        for path in [registry, *registry.rglob("*")]:
            os.chown(path, CONTAINER_UID, CONTAINER_UID, follow_symlinks=False)
    return registry


@pytest.fixture
def stack(docker_engine, tmp_path):
    stack = Stack(_registry_copy(tmp_path), ["docker-compose.yml"], _free_port())
    try:
        stack.compose("--profile", "train", "build", step="build api + trainer images")
        assert stack.compose("ps", "--all", "--quiet").stdout.strip() == "", "project already has containers"
        yield stack
    finally:
        stack.take_down("--profile", "train")


@pytest.fixture
def api_stack(docker_engine, tmp_path):
    """The service alone: for the tests that need no trainer."""
    stack = Stack(_registry_copy(tmp_path), ["docker-compose.yml"], _free_port())
    try:
        stack.compose("build", "api", step="build api image")
        yield stack
    finally:
        stack.take_down()


@pytest.fixture
def trainer_stack(docker_engine, tmp_path):
    """The trainer alone: for the tests that start no service."""
    stack = Stack(_registry_copy(tmp_path), ["docker-compose.yml"], _free_port())
    try:
        stack.compose("--profile", "train", "build", "trainer", step="build trainer image")
        yield stack
    finally:
        stack.take_down("--profile", "train")


@pytest.fixture
def scaled_stack(docker_engine, tmp_path):
    stack = Stack(_registry_copy(tmp_path), ["docker-compose.yml", "docker/compose.scale.yml"], _free_port())
    stack.env["SCRATCHNET_WORKERS"] = "1"
    try:
        stack.compose("build", step="build api + lb images")
        yield stack
    finally:
        stack.take_down()


def _mnist_test_pngs(datasets_dir: Path, count: int) -> list[tuple[bytes, str]]:
    """The first test digits as a user would send them: dark ink on white paper, 140x140 PNG."""
    with gzip.open(datasets_dir / "mnist" / "t10k-images-idx3-ubyte.gz") as file:
        images = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(datasets_dir / "mnist" / "t10k-labels-idx1-ubyte.gz") as file:
        labels = np.frombuffer(file.read(), np.uint8, offset=8)
    pngs = []
    for pixels, label in zip(images[:count], labels[:count]):
        buffer = io.BytesIO()
        Image.fromarray(255 - pixels).resize((140, 140), Image.Resampling.BILINEAR).save(buffer, "PNG")
        pngs.append((buffer.getvalue(), str(label)))
    return pngs


def _predict(session: requests.Session, base_url: str, png: bytes, *, new_connection: bool = False) -> requests.Response:
    headers = {"Content-Type": "image/png"}
    if new_connection:  # a kept-alive connection stays with one Gunicorn worker
        headers["Connection"] = "close"
    return session.post(f"{base_url}/predict", data=png, headers=headers, timeout=10)


def _served_version(response: requests.Response) -> int:
    body = response.json()
    header = int(response.headers["X-Model-Version"])
    assert body["model"] == {"name": MODEL, "version": header}, body["model"]
    return header


class ClientLoop(threading.Thread):
    """Posts one image again and again, each time on a new connection so that every Gunicorn
    worker answers some, recording (time, status or error, version)."""

    def __init__(self, base_url: str, png: bytes):
        super().__init__(daemon=True)
        self.base_url, self.png = base_url, png
        self.records: list[tuple[float, object, int | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                try:
                    response = _predict(session, self.base_url, self.png, new_connection=True)
                    version = _served_version(response) if response.status_code == 200 else None
                    self.records.append((time.monotonic(), response.status_code, version))
                except Exception as error:  # every failure is a finding, reported by the test
                    self.records.append((time.monotonic(), repr(error), None))
                time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

    def failures(self) -> list:
        return [record for record in self.records if record[1] != 200]

    def wait_until_all_serve(self, version: int, since: float, settle: int = 12, timeout: float = 15) -> float:
        """Seconds after ``since`` from which ``settle`` responses in a row named ``version``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = [r for r in self.records if r[0] >= since]
            for i in range(len(recent) - settle + 1):
                if all(r[2] == version for r in recent[i:]):
                    return recent[i][0] - since
            time.sleep(0.1)
        seen = sorted({r[2] for r in self.records if r[0] >= since}, key=str)
        pytest.fail(f"the service did not settle on version {version} within {timeout} s (saw {seen})")


def _versions(registry: Path) -> set[int]:
    return {int(p.name) for p in (registry / MODEL).iterdir() if p.is_dir() and p.name.isdigit()}


HARDENING_PROBE = """
import errno, json, os
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
try:
    open("/opt/probe", "w")
    root = "writable"
except OSError as error:
    root = os.strerror(error.errno)
mounts = {fields[1]: fields[2] for fields in (line.split() for line in open("/proc/self/mounts"))}
print(json.dumps({"root": root, "CapBnd": status["CapBnd"], "NoNewPrivs": status["NoNewPrivs"],
                  "/tmp": mounts.get("/tmp")}))
"""


HARDENED = {"root": "Read-only file system", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "/tmp": "tmpfs"}


def _hardening(stack, service: str) -> dict:
    """What a process of ``service`` finds: whether it can write the root file system, the
    capabilities it could ever hold, whether it can gain privileges, and what /tmp is."""
    if service == "trainer":  # runs only when asked to
        command = ("run", "--rm", "--no-deps", "--entrypoint", "python", service, "-c", HARDENING_PROBE)
    else:
        command = ("exec", "-T", service, "python3", "-c", HARDENING_PROBE)
    return json.loads(stack.compose(*command).stdout.strip().splitlines()[-1])


def _image_size_mb(image: str) -> float:
    size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image],
                          capture_output=True, text=True, check=True).stdout
    return round(int(size) / 1e6, 1)


def test_compose_serves_retrains_hot_swaps_and_pins(stack, datasets_dir, capsys):
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120", step="up --wait (api healthy)")
    base = stack.base_url
    running = stack.compose("ps", "--format", "{{.Service}}").stdout.split()
    assert running == ["api"], f"a plain `up` starts only the api, got {running}"

    with requests.Session() as session:
        assert session.get(f"{base}/healthz", timeout=5).status_code == 200
        assert session.get(f"{base}/readyz", timeout=5).status_code == 200

        # The committed model answers a user's picture of a digit through the published port.
        digits = _mnist_test_pngs(datasets_dir, 10)
        old = _served_version(_predict(session, base, digits[0][0]))
        assert old == max(_versions(stack.registry)), "with nothing pinned the latest version serves"
        correct = 0
        for png, label in digits:
            response = _predict(session, base, png)
            assert response.status_code == 200, response.text
            assert _served_version(response) == old
            correct += response.json()["predictions"][0]["label"] == label
        assert correct >= 8, f"the baseline model got only {correct}/10 MNIST test digits right"

    uid = stack.compose("exec", "-T", "api", "python", "-c", "import os; print(os.getuid())").stdout.strip()
    assert uid != "0", "the service runs as root"
    for service in ("api", "trainer"):
        assert _hardening(stack, service) == HARDENED, service

    # Retrain in the trainer container against the same registry, under a steady client load.
    client = ClientLoop(base, digits[0][0])
    client.start()
    try:
        started = time.monotonic()
        trainer = subprocess.Popen(
            stack.command("run", "--rm", "--volume", f"{datasets_dir}:/data:ro", "trainer",
                          "train", "--dataset", MODEL, "--data-dir", "/data", "--epochs", "1",
                          "--hidden", "64", "--limit-train", "3000", "--seed", "1", "--no-progress",
                          "--publish"),
            env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        published_at = None
        while trainer.poll() is None:
            if published_at is None and max(_versions(stack.registry)) > old:
                published_at = time.monotonic()
            time.sleep(0.05)
        output = trainer.stdout.read()
        trainer.stdout.close()
        stack.timings["trainer run (train + publish)"] = time.monotonic() - started
        assert trainer.returncode == 0, f"the trainer container failed:\n{output[-4000:]}"
        published_at = published_at or time.monotonic()
        new_versions = {v for v in _versions(stack.registry) if v > old}
        assert len(new_versions) == 1, f"expected one new version after {old}, found {sorted(new_versions)}"
        new = new_versions.pop()
        assert (stack.registry / MODEL / str(new) / "model.npz").is_file()

        swap = client.wait_until_all_serve(new, since=published_at)
        stack.timings["publish -> all workers on new"] = swap
        assert swap < 10, f"the service took {swap:.1f} s to serve version {new}"

        # Pin the old version back through the admin API.
        with requests.Session() as session:
            url = f"{base}/models/{MODEL}/versions/{old}/activate"
            assert session.post(url, timeout=10).status_code == 401
            pinned_at = time.monotonic()
            response = session.post(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
            assert response.status_code == 200, response.text
        back = client.wait_until_all_serve(old, since=pinned_at)
        stack.timings["pin -> all workers on old"] = back
        assert back < 10, f"the service took {back:.1f} s to serve the pinned version {old}"
        serving = json.loads((stack.registry / MODEL / "serving.json").read_text())
        assert serving["pinned"] == old
    finally:
        client.stop()

    failures = client.failures()
    assert not failures, f"{len(failures)} of {len(client.records)} requests failed during retrain/swap/pin: {failures[:5]}"
    assert {r[2] for r in client.records} <= {old, new}

    stack.report(capsys, "compose", {
        "requests during retrain/swap/pin": len(client.records),
        "failed requests": len(failures),
        "versions": f"{old} -> {new} -> pinned {old}",
        "base image": stack.env.get("PYTHON_IMAGE", "the compose file's default"),
        "image scratchnet-api MB": _image_size_mb(stack.image("api")),
        "image scratchnet-trainer MB": _image_size_mb(stack.image("trainer")),
    })
    # docs/docker.md's way to drop the dataset cache (a plain `down -v` leaves the trainer's volume).
    volumes = ["docker", "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"]
    assert subprocess.run(volumes, capture_output=True, text=True, timeout=60).stdout.split(), "no dataset cache volume"
    stack.take_down("--profile", "train")
    assert subprocess.run(volumes, capture_output=True, text=True, timeout=60).stdout.split() == []


def test_compose_trainer_keeps_an_unpublished_run_for_a_later_publish(trainer_stack, datasets_dir):
    """A run without --publish is saved in a folder that the next `docker compose run --rm trainer`
    still finds, so `trainer publish <folder>` (docs/training.md's "publishes ... later") works in compose as
    it does on the host: the container's own /tmp is a tmpfs that goes with the container."""
    stack = trainer_stack
    trained = stack.compose("run", "--rm", "--volume", f"{datasets_dir}:/data:ro", "trainer",
                            "train", "--dataset", MODEL, "--data-dir", "/data", "--epochs", "1", "--hidden", "16",
                            "--limit-train", "500", "--no-progress")
    saved = trained.stdout.strip().splitlines()[-1]
    assert saved.startswith(f"saved {MODEL} in /"), trained.stdout[-2000:]
    folder = saved.split(" in ", 1)[1]
    before = max(_versions(stack.registry))
    published = stack.compose("run", "--rm", "trainer", "publish", folder, check=False)
    output = published.stdout[-2000:] + published.stderr[-2000:]
    assert published.returncode == 0, f"the saved run {folder} is gone:\n{output}"
    assert max(_versions(stack.registry)) == before + 1


def test_scaled_api_behind_load_balancer(scaled_stack, datasets_dir, capsys):
    stack = scaled_stack
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120", "--scale", "api=3",
                  step="up --wait (3 api + lb)")
    replicas = stack.compose("ps", "--quiet", "api").stdout.split()
    assert len(replicas) == 3

    png, label = _mnist_test_pngs(datasets_dir, 1)[0]
    upstreams = set()
    with requests.Session() as session:
        for _ in range(30):
            response = _predict(session, stack.base_url, png)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["label"] == label
            upstreams.add(response.headers["X-Upstream"])
    assert len(upstreams) == 3, f"the load balancer used {len(upstreams)} of 3 replicas: {upstreams}"
    assert _hardening(stack, "lb") == HARDENED

    # HTTP/1.0 needs no Host; the balancer passes requests on as HTTP/1.1, which the service refuses without one.
    with socket.create_connection(tuple(stack.base_url.removeprefix("http://").split(":")), timeout=30) as sock:
        sock.sendall(b"GET /models HTTP/1.0\r\n\r\n")
        assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 200 "), "HTTP/1.0 without Host refused"

    # The balancer reads bodies whole before passing them on, within the service's limit: an
    # upload that stops halfway never reaches a replica (13 would otherwise hold all 12 of their
    # threads until the client timeout), and a body over the limit gets the service's JSON error.
    host, port = stack.base_url.removeprefix("http://").split(":")
    stalled = []
    for _ in range(13):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 1000000\r\n\r\n\x89PNG")
        stalled.append(sock)
    try:
        with requests.Session() as session:
            for _ in range(6):
                assert _predict(session, stack.base_url, png).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
    time.sleep(2)  # a request nginx had passed on would now fail in its replica, and say so in the log
    api_log = stack.compose("logs", "--no-color", "api").stdout
    assert "/models/mnist/predict" not in api_log, "an incomplete upload reached a replica"
    too_large = requests.post(stack.base_url + "/models/mnist/predict", data=b"\0" * (64 * 2**20 + 1),
                              headers={"Content-Type": "image/png"}, timeout=60)
    assert too_large.status_code == 413 and too_large.json()["code"] == "payload_too_large"

    stack.report(capsys, "compose scale", {
        "replicas answering": len(upstreams),
        "image scratchnet-lb MB": _image_size_mb(stack.image("lb")),
    })


def test_scaled_stop_finishes_requests_in_flight_at_the_load_balancer(scaled_stack):
    """`docker compose stop` of the scaled stack stops the load balancer first (it depends on the
    api): nginx must finish the request it is reading or passing on, as Gunicorn does, not drop it."""
    stack = scaled_stack
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120", "--scale", "api=2")
    png = (REPO / "examples" / "digit.png").read_bytes()
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /models/{MODEL}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     f"Content-Length: {len(png)}\r\n\r\n".encode() + png[:100])
        stopping = subprocess.Popen(stack.command("stop"), env=stack.env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
        try:
            for line in stopping.stderr:  # compose says so as it sends the container its stop signal
                if "lb-1" in line and "Stopping" in line:
                    break
            time.sleep(1)
            answer = b""
            try:
                sock.sendall(png[100:])
                while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            except OSError as error:
                answer += f"{error!r}".encode()
        finally:
            stopping.communicate(timeout=120)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["model"]["name"] == MODEL


def test_scaled_load_balancer_buffers_large_uploads_within_its_memory_limit(scaled_stack):
    """Bodies within the service's 64 MiB limit that nginx buffers to files, three at once, neither
    get nginx killed under its 128 MB memory limit nor cut off the requests that pass through it."""
    stack = scaled_stack
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120", "--scale", "api=1")
    host, port = stack.base_url.removeprefix("http://").split(":")
    size = 60 * 1024 * 1024
    uploads = []
    try:
        for _ in range(3):
            sock = socket.create_connection((host, int(port)), timeout=60)
            uploads.append(sock)
            sock.sendall(f"POST /models/{MODEL}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {size}\r\n\r\n".encode())
            for _ in range(size // (1 << 20) - 1):
                sock.sendall(b" " * (1 << 20))
        time.sleep(2)
        ids = stack.compose("ps", "--all", "--quiet", "lb").stdout.split()
        state = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True,
                                          check=True).stdout)[0]
        assert not state["State"]["OOMKilled"] and state["RestartCount"] == 0, state["State"]
        for sock in uploads:  # each is answered by the service: a body of blanks holds no JSON
            sock.sendall(b"{}" + b" " * ((1 << 20) - 2))
            answer = sock.makefile("rb").readline()
            assert answer.startswith(b"HTTP/1.1 4"), answer
    finally:
        for sock in uploads:
            sock.close()


def _api_container(stack: Stack) -> dict:
    ids = stack.compose("ps", "--all", "--quiet", "api").stdout.split()
    assert len(ids) == 1, f"expected one api container, found {ids}"
    done = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)[0]


def _wait_for(condition, timeout: float = 60):
    """``condition()``'s first true value, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.25)
    return None


def test_compose_passes_on_the_service_settings(api_stack):
    """A setting in the shell or .env reaches the service: not only the few that
    docker-compose.yml names with a default (workers, poll interval, admin token)."""
    stack = api_stack
    stack.env.update(SCRATCHNET_LOG_FORMAT="text", SCRATCHNET_MAX_BATCH="2", SCRATCHNET_THREADS="3")
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120")

    image = base64.b64encode((REPO / "examples" / "digit.png").read_bytes()).decode()
    with requests.Session() as session:
        over = session.post(f"{stack.base_url}/predict", json={"images": [image] * 3}, timeout=10)
        assert over.status_code == 413, over.text
        assert "the limit is 2 per request" in over.json()["error"]
        assert session.post(f"{stack.base_url}/predict", json={"images": [image] * 2}, timeout=10).status_code == 200

    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "api").stdout.splitlines()
    access = [line for line in logs if "POST /predict 413" in line]
    assert access, f"no access line for the refused request in:\n{logs[-20:]}"
    assert not access[0].lstrip().startswith("{"), f"SCRATCHNET_LOG_FORMAT=text was ignored: {access[0]}"
    threads = stack.compose("exec", "-T", "api", "python", "-c",
                            "import os; print(os.environ.get('SCRATCHNET_THREADS'))").stdout.strip()
    assert threads == "3", f"SCRATCHNET_THREADS did not reach the service (it has {threads!r})"


def _largest_json_batch() -> bytes:
    """A native JSON request at the default limits: 10,000 vectors of 784 numbers (7.84 million of
    the 8 million a request may hold), three decimals each: 54 MB."""
    rows = np.random.default_rng(0).random((10_000, 784))
    text = io.BytesIO()
    np.savetxt(text, rows, fmt="%.3f", delimiter=",")
    return b'{"inputs": [[' + b"],[".join(text.getvalue().splitlines()) + b"]]}"


def test_compose_answers_the_largest_json_batches_together_within_its_memory_limit(api_stack):
    """Four of the largest JSON batches at once, one per thread of the service's two workers:
    parsing one costs ~450 MB of Python objects, so together they would pass the 1 GB compose
    gives the service, and the kernel would kill a worker with the requests it held. They take
    turns, and every one is answered."""
    stack = api_stack
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120")
    body = _largest_json_batch()
    answers = []

    def send() -> None:
        try:
            response = requests.post(f"{stack.base_url}/models/{MODEL}/predict", data=body, timeout=300,
                                     headers={"Content-Type": "application/json", "Connection": "close"})
            answers.append((response.status_code, len(response.json()["predictions"])
                            if response.status_code == 200 else response.text[:300]))
        except requests.RequestException as error:  # a worker killed under the request
            answers.append((repr(error), None))

    senders = [threading.Thread(target=send) for _ in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert answers == [(200, 10_000)] * 4
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "api").stdout
    assert "SIGKILL" not in logs and "out of memory" not in logs.lower(), logs[-3000:]


def test_compose_bad_setting_is_the_only_line_in_the_log(api_stack):
    """A setting Gunicorn cannot use keeps the service from starting, and the container's log says
    why in one line (once per restart), with no traceback around it."""
    stack = api_stack
    stack.env["SCRATCHNET_WORKERS"] = "two"
    stack.compose("up", "--detach")

    def restarted():
        container = _api_container(stack)
        return container if container["RestartCount"] >= 1 else None

    container = _wait_for(restarted)
    assert container is not None, f"the container never failed: {_api_container(stack)['State']}"
    assert container["State"].get("Health", {}).get("Status") != "healthy"
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "api").stdout.splitlines()
    reason = "SCRATCHNET_WORKERS='two': expected a whole number of at least 1"
    lines = [json.loads(line) for line in logs if line.strip()]  # lines of the JSON log, as every other
    assert lines and all((line["level"], line["message"]) == ("critical", reason) for line in lines), logs


def test_compose_says_why_it_cannot_read_the_registry(api_stack):
    """A registry folder or model file the container's user may not read is named as such, with the
    uid the service runs as, rather than as a registry without models."""
    stack = api_stack
    registry = stack.registry
    newest = max(_versions(registry))
    (registry / MODEL / str(newest) / "model.npz").chmod(0o000)
    registry.chmod(0o000)
    try:
        stack.compose("up", "--detach")
        uid = stack.env["SCRATCHNET_UID"]

        def not_ready():
            try:
                response = requests.get(f"{stack.base_url}/readyz", timeout=5)
            except requests.ConnectionError:
                return None
            return response.json() if response.status_code == 503 else None

        body = _wait_for(not_ready)
        assert body is not None, "/readyz did not answer 503"
        reason = body["reason"]
        assert "cannot be read (Permission denied)" in reason, reason
        assert f"uid {uid}" in reason and "SCRATCHNET_UID" in reason, reason
        logs = stack.compose("logs", "--no-color", "api").stdout
        assert "is not in the registry" not in logs, "an unreadable registry was reported as one without the model"

        # The folder readable again, one model file still not: that version is refused, naming the
        # user, and the version below it serves.
        registry.chmod(0o755)

        def described():
            body = requests.get(f"{stack.base_url}/models/{MODEL}", timeout=5).json()
            return body if body.get("served_version") is not None else None

        body = _wait_for(described)
        assert body is not None, f"{MODEL} was not served once the registry could be read"
        assert body["served_version"] == newest - 1, body
        status = {v["version"]: v["status"] for v in body["versions"]}
        assert status[newest] == f"failed: cannot read the file as uid {uid} (Permission denied)", status
    finally:
        registry.chmod(0o755)
        for path in registry.rglob("model.npz"):
            path.chmod(0o644)


def test_compose_stop_finishes_requests_in_flight_and_restart_keeps_the_pin(api_stack):
    """`docker compose stop` (SIGTERM) lets a request already under way finish, Gunicorn exits 0
    rather than being killed (137), and the service started again serves the pinned version."""
    stack = api_stack
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120")
    old = min(_versions(stack.registry))
    response = requests.post(f"{stack.base_url}/models/{MODEL}/versions/{old}/activate",
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    png = (REPO / "examples" / "digit.png").read_bytes()
    with requests.Session() as session:  # every worker follows the pin within the poll interval
        def all_on_old():
            return all(_served_version(_predict(session, stack.base_url, png, new_connection=True)) == old
                       for _ in range(12))
        assert _wait_for(all_on_old, timeout=15), f"the workers did not all serve the pinned version {old}"

    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /models/{MODEL}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     f"Content-Length: {len(png)}\r\n\r\n".encode() + png[:100])
        stopping = subprocess.Popen(stack.command("stop"), env=stack.env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        try:
            signalled = _wait_for(lambda: "Handling signal: term" in stack.compose(
                "logs", "--no-color", "api").stdout)
            assert signalled, "Gunicorn never logged the stop signal"
            sock.sendall(png[100:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        finally:
            stopping.wait(timeout=120)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["model"] == {"name": MODEL, "version": old}
    state = _api_container(stack)["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0, state

    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120")
    with requests.Session() as session:
        assert _served_version(_predict(session, stack.base_url, png)) == old


def test_image_on_a_read_only_root_checks_its_health_where_it_listens(api_stack):
    """`docker run --read-only --tmpfs /tmp` (docs/docker.md) with the service on a unix socket in
    /tmp: the image's HEALTHCHECK reads SCRATCHNET_BIND as Gunicorn does (it took the text after
    the last colon for a TCP port). Without the tmpfs, the log is one line saying to mount one."""
    name = f"{api_stack.project}-read-only"
    run = ["docker", "run", "--read-only", "--health-interval", "1s", "-e", "SCRATCHNET_BIND=unix:/tmp/api.sock"]
    try:
        subprocess.run([*run, "--detach", "--name", name, "--tmpfs", "/tmp", api_stack.image("api")],
                       check=True, capture_output=True, timeout=60)

        def healthy() -> bool:
            done = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", name],
                                  capture_output=True, text=True, timeout=30)
            return done.stdout.strip() == "healthy"

        if not _wait_for(healthy, timeout=90):
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30).stderr
            pytest.fail(f"never healthy:\n{logs[-3000:]}")
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, timeout=60)
    done = subprocess.run([*run, "--rm", api_stack.image("api")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    said = json.loads(line)["message"]
    assert said.startswith("no folder for the workers' metrics: TMPDIR unset") and "--tmpfs /tmp" in said


KILL_GUNICORN_MASTER = """
import os, signal
for pid in os.listdir("/proc"):
    if pid.isdigit() and open(f"/proc/{pid}/stat").read().split()[3] == "1":
        if b"gunicorn" in open(f"/proc/{pid}/cmdline", "rb").read():
            os.kill(int(pid), signal.SIGKILL)
"""


def test_compose_reload_from_inside_keeps_the_container_restarted_after_a_crash(api_stack):
    """docs/docker.md's reload, `docker compose exec api sh -c 'kill -HUP 1'`, replaces every worker,
    and the container is still one `restart: unless-stopped` brings back when Gunicorn dies afterwards
    (`docker compose kill -s HUP` marks it stopped by hand, and a later crash leaves it down)."""
    stack = api_stack
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120")

    def worker_pids() -> set[str]:
        return {requests.get(f"{stack.base_url}/healthz", headers={"Connection": "close"},
                             timeout=10).headers["X-Worker-PID"] for _ in range(12)}

    before = worker_pids()
    stack.compose("exec", "-T", "api", "sh", "-c", "kill -HUP 1")
    assert _wait_for(lambda: not worker_pids() & before, timeout=30), "the workers were not replaced"

    stack.compose("exec", "-T", "api", "python", "-c", KILL_GUNICORN_MASTER, check=False)

    def back() -> bool:
        container = _api_container(stack)
        return container["RestartCount"] >= 1 and container["State"].get("Health", {}).get("Status") == "healthy"

    assert _wait_for(back, timeout=90), f"not restarted after the crash: {_api_container(stack)['State']}"
    assert requests.get(f"{stack.base_url}/readyz", timeout=10).status_code == 200
