"""The registry where it is deployed: shared by the users of a group, published under a private
umask, mounted read-only, or under a path that is not UTF-8. Users and mounts are real (they need
root, and are failures rather than skips under CI)."""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import orjson
import pytest

from modelgen import publish_model
from service.app import create_app
from service.logs import configure_logging
from shared.registry import MODEL_FILE
from skips import needs_root
from users import run_as

TOKEN = "deployment-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VECTOR = {"inputs": [0.5] * 784}
GROUP = 4243  # the group two users (uids 4241, 4242) share a registry through


def make_app(registry):
    app = create_app({"registry": registry, "watch": False, "admin_token": TOKEN})
    app.extensions["scratchnet"].store.refresh()
    return app


def modes(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def with_umask(umask: int, action):
    old = os.umask(umask)
    try:
        return action()
    finally:
        os.umask(old)


def test_a_version_published_under_a_private_umask_can_be_read_by_the_service(tmp_path):
    # The trainer's user has umask 077; the service runs as another user.
    root = tmp_path / "fresh" / "models"
    with_umask(0o077, lambda: publish_model(root, "mnist"))
    assert [modes(path) for path in (root, root / "mnist", root / "mnist" / "1")] == ["0o755"] * 3
    assert modes(root / "mnist" / "1" / MODEL_FILE) == "0o644"

    # A registry a group shares: its setgid folder is made group-writable, and stays the group's.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2775)
    with_umask(0o002, lambda: publish_model(shared, "mnist"))
    assert modes(shared / "mnist") == modes(shared / "mnist" / "1") == "0o2775"
    assert modes(shared / "mnist" / "1" / MODEL_FILE) == "0o644"


def shared_registry() -> Path:
    """A registry folder and a model folder the group GROUP may write (setgid, 2775), as an
    administrator sets one up for the users who publish and serve. Outside pytest's own folders,
    which are root's alone."""
    root = Path(tempfile.mkdtemp(prefix="scratchnet-shared-")) / "models"
    (root / "mnist").mkdir(parents=True)
    for path in (root.parent, root, root / "mnist"):
        os.chown(path, 0, GROUP)
        path.chmod(0o2775)
    return root


def test_two_users_of_one_group_both_pin_versions_of_a_shared_registry(tmp_path):
    needs_root("running as two users")

    def first_user(root: Path) -> None:  # publishes two versions and pins the first
        publish_model(root, "mnist", seed=1)
        publish_model(root, "mnist", seed=2)
        client = make_app(root).test_client()
        assert client.post("/models/mnist/versions/1/activate", headers=AUTH).status_code == 200

    def second_user(root: Path) -> None:  # serves them, moves the pin, rolls it back
        client = make_app(root).test_client()
        assert client.post("/models/mnist/predict", json=VECTOR).get_json()["model"]["version"] == 1
        response = client.post("/models/mnist/versions/2/activate", headers=AUTH)
        assert response.status_code == 200, response.get_json()
        assert client.post("/models/mnist/predict", json=VECTOR).get_json()["model"]["version"] == 2
        assert client.post("/models/mnist/rollback", headers=AUTH).get_json()["pinned"] == 1
        assert client.put("/models/mnist/labels/stable", json={"version": 2}, headers=AUTH).status_code == 200

    def first_user_again(root: Path) -> None:  # changes what the second user wrote last
        response = make_app(root).test_client().delete("/models/mnist/labels/stable", headers=AUTH)
        assert response.status_code == 200 and response.get_json()["labels"] == {}, response.get_json()

    for check in (first_user, second_user, first_user_again):  # as root first: every module they use is loaded
        check(tmp_path / "warm-up")
    root = shared_registry()
    try:
        run_as(4241, GROUP, umask=0o022, check=lambda: first_user(root))
        lock = root / "mnist" / ".serving.lock"
        assert lock.stat().st_uid == 4241 and modes(lock) == "0o644"  # the first user's, not writable by the group
        run_as(4242, GROUP, umask=0o022, check=lambda: second_user(root))
        run_as(4241, GROUP, umask=0o022, check=lambda: first_user_again(root))
    finally:
        shutil.rmtree(root.parent)


@pytest.fixture
def read_only_registry(tmp_path):
    """A registry (mnist v1 and v2, an .serving.lock left by an earlier change; ``solo`` with one
    version and no lock) bind-mounted read-only at ``tmp_path / "ro"``."""
    source = tmp_path / "models"
    publish_model(source, "mnist", seed=1)
    publish_model(source, "mnist", seed=2)
    publish_model(source, "solo")
    client = make_app(source).test_client()
    assert client.post("/models/mnist/versions/1/activate", headers=AUTH).status_code == 200
    assert client.post("/models/mnist/unpin", headers=AUTH).status_code == 200
    assert (source / "mnist" / ".serving.lock").exists() and not (source / "solo" / ".serving.lock").exists()
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    needs_root("a read-only bind mount")
    mounted = subprocess.run(["mount", "--bind", str(source), str(mount_point)], capture_output=True).returncode == 0
    if not mounted:
        pytest.fail("mount --bind failed, though running as root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount_point)], check=True, capture_output=True)
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_read_only_registry_serves_and_says_why_it_cannot_be_changed(read_only_registry):
    client = make_app(read_only_registry).test_client()
    assert client.post("/models/mnist/predict", json=VECTOR).get_json()["model"]["version"] == 2
    assert client.get("/readyz").status_code == 200
    for route in ("/models/mnist/versions/1/activate", "/models/mnist/versions/2/activate", "/models/mnist/rollback",
                  "/v2/repository/models/mnist/unload"):
        response = client.post(route, headers=AUTH)
        body = response.get_json()
        assert response.status_code == 409, (route, body)
        assert route.startswith("/v2/") or body["code"] == "registry_read_only"  # V2's errors carry no code
        assert "is on a read-only file system" in body["error"] and "mount the registry read-write" in body["error"]
    # A change that leaves the state as it is needs no write: it succeeds (a client loading a model
    # already loaded, to be sure of it, as Triton's clients do).
    for route in ("/models/mnist/unpin", "/models/solo/unpin", "/v2/repository/models/mnist/load"):
        response = client.post(route, headers=AUTH)
        assert response.status_code == 200, (route, response.get_json())
    # What is wrong with the request itself is said first, as on a writable registry.
    response = client.delete("/models/mnist/labels/missing", headers=AUTH)
    assert response.status_code == 404 and response.get_json()["code"] == "label_not_found"
    response = client.post("/models/solo/rollback", headers=AUTH)
    assert response.status_code == 409 and response.get_json()["code"] == "nothing_to_roll_back_to"
    response = client.post("/models/mnist/versions/9/activate", headers=AUTH)
    assert response.status_code == 404 and response.get_json()["code"] == "version_not_found"
    assert client.post("/models/mnist/predict", json=VECTOR).get_json()["model"]["version"] == 2


def test_a_registry_path_that_is_not_utf8_is_shown_as_text_in_answers_and_logs(tmp_path, capsys):
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/lat\xe9n"))  # a Latin-1 folder name
    shown = os.fsencode(root).decode("utf-8", "backslashreplace")  # .../lat\xe9n
    publish_model(root, "mnist")
    (root / "mnist" / "serving.json").write_text("{not json")
    configure_logging("json")
    client = make_app(root).test_client()
    answers = [client.get("/readyz"), client.get("/models/mnist"), client.post("/models/mnist/unpin", headers=AUTH),
               client.post("/v2/repository/models/mnist/load", headers=AUTH)]
    for response in answers:
        body = orjson.loads(response.data)  # orjson, as strict as JSON parsers come, refuses a lone surrogate
        text = response.get_data(as_text=True)
        assert shown in text.replace("\\\\", "\\") and "\\ud" not in text, body
    assert [response.status_code for response in answers] == [503, 200, 409, 409]

    stderr = capsys.readouterr().err
    assert "Logging error" not in stderr
    lines = [orjson.loads(line) for line in stderr.splitlines()]
    assert any(line["message"] == f"service started: registry {shown}, models mnist" for line in lines), lines
    assert any(shown + "/mnist/serving.json cannot be read" in line["message"] for line in lines), lines
