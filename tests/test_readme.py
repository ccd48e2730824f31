"""The README's first requests, sent to a real Gunicorn on the committed models, get the answers the
README shows, character for character."""

import requests

from server import REPO, ServiceProcess

README = (REPO / "README.md").read_text()


def shown_answers() -> list[str]:
    """The answers shown under "Run it" after the drawing page, each joined from its comment lines."""
    block = README.split("Then open http://127.0.0.1:8000/", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    answers = []
    for line in block.splitlines():
        if line.startswith("# {"):
            answers.append(line[2:])
        elif line.startswith("#   "):
            answers[-1] += line[4:]
    return answers


def test_the_readme_first_requests_get_the_answers_it_shows():
    wine = {"inputs": [[7.4, 0.7, 0.0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4]]}
    with ServiceProcess(REPO / "models", workers=1) as server:
        digit = requests.post(server.url + "/predict", data=(REPO / "examples/digit.png").read_bytes(),
                              headers={"Content-Type": "image/png"}, timeout=30)
        vector = requests.post(server.url + "/models/wine-quality/predict", json=wine, timeout=30)
    assert shown_answers() == [digit.text, vector.text]
