"""Operational routes: liveness, readiness, metrics, the OpenAPI document and its page, and the
drawing page at ``/`` (served from ``service/templates/index.html`` when it exists)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, render_template_string, request, send_from_directory

from .context import service
from .errors import ServiceError
from .openapi import openapi_document

ops_bp = Blueprint("ops", __name__)

PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>scratchnet</title></head>
<body><h1>scratchnet</h1>
<p>The prediction service is running. The drawing page is not installed in this build.</p>
<p>See <a href="docs">the API</a>, <a href="models">the models</a> and <a href="readyz">readiness</a>.</p>
</body></html>
"""

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>scratchnet API</title>
<style>
 body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 62rem; padding: 0 1rem; color: #222; }
 h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
 .op { border: 1px solid #ddd; border-radius: 6px; padding: .6rem .9rem; margin: .8rem 0; }
 .method { display: inline-block; min-width: 4.2rem; font-weight: 700; text-transform: uppercase; }
 .get { color: #0a6; } .post { color: #06c; } .put { color: #a60; } .delete { color: #c33; }
 code { background: #f4f4f4; padding: 0 .25rem; border-radius: 3px; overflow-wrap: anywhere; }
 table { border-collapse: collapse; margin: .3rem 0; }
 td { padding: .1rem .6rem .1rem 0; vertical-align: top; overflow-wrap: anywhere; }
 .lock { color: #a60; font-size: .85em; }
</style></head>
<body>
<nav><a href="./">Back to the drawing page</a></nav>
<h1>{{ doc.info.title }} API <small>{{ doc.info.version }}</small></h1>
<p>{{ doc.info.description }} The machine-readable document is <a href="openapi.json">openapi.json</a>.</p>
{% for tag, ops in groups %}
<h2>{{ tag }}</h2>
{% for path, method, op in ops %}
<div class="op" id="{{ op.operationId }}">
 <span class="method {{ method }}">{{ method }}</span> <code>{{ path }}</code>
 {% if op.security %}<span class="lock">admin: Authorization: Bearer &lt;token&gt;</span>{% endif %}
 <div>{{ op.summary }}</div>
 {% if op.parameters %}<table>{% for p in op.parameters %}
  <tr><td><code>{{ p.name }}</code></td><td>{{ p.in }}{% if p.required %}, required{% endif %}</td>
      <td>{{ p.schema.type }}</td><td>{{ p.description or "" }}</td></tr>{% endfor %}</table>{% endif %}
 {% if op.requestBody %}<div>Body: {% for ct in op.requestBody.content %}<code>{{ ct }}</code> {% endfor %}
  {% if op.requestBody.description %}<div>{{ op.requestBody.description }}</div>{% endif %}</div>{% endif %}
 <div>Responses: {% for status, r in op.responses.items() %}<code title="{{ r.description }}">{{ status }}</code> {% endfor %}</div>
</div>
{% endfor %}{% endfor %}
<h2>Schemas</h2>
{% for name, schema in doc.components.schemas.items() %}
<div class="op" id="schema-{{ name }}"><b>{{ name }}</b>
 {% if schema.properties %}<table>{% for prop, s in schema.properties.items() %}
  <tr><td><code>{{ prop }}</code>{% if prop in (schema.required or []) %} *{% endif %}</td>
      <td>{{ s.type or ("$ref" in s and s["$ref"].split("/")[-1]) or "see document" }}</td>
      <td>{{ s.description or "" }}</td></tr>{% endfor %}</table>{% endif %}
</div>
{% endfor %}
</body></html>
"""


@ops_bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@ops_bp.get("/readyz")
def readyz():
    svc = service()
    ready, report = svc.store.readiness()
    report["default_model"] = _default_model(svc, report["models"])
    response = jsonify(report)
    response.status_code = 200 if ready else 503
    if not ready:
        g.error_code = "not_ready"
    return response


def _default_model(svc, models: dict) -> dict:
    """POST /predict's model (SCRATCHNET_DEFAULT_MODEL) as readiness sees it. Readiness waits for the models
    served (SCRATCHNET_MODELS, else the registry's), every worker alike, and the default one only while it is
    one of those: one removed from the registry (or left out of SCRATCHNET_MODELS) leaves the others ready,
    and its entry says why POST /predict answers 404, in the words of that 404."""
    name = svc.settings.default_model
    entry = models.get(name)
    if entry is not None:
        return {"name": name, **entry}
    try:
        svc.predictor.resolve()
        reason = None  # it came into the registry since the models were listed
    except ServiceError as e:
        reason = e.message
    return {"name": name, "ready": False, "version": None, "reason": reason}


@ops_bp.get("/metrics")
def metrics():
    svc = service()
    return current_app.response_class(svc.metrics.exposition(svc.store.versions_held()),
                                      content_type=svc.metrics.content_type)


@ops_bp.get("/openapi.json")
def openapi_json():
    return jsonify(current_app.extensions["scratchnet.openapi"])


@ops_bp.get("/docs")
def docs():
    doc = current_app.extensions["scratchnet.openapi"]
    groups: dict[str, list] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            groups.setdefault(op["tags"][0], []).append((path, method, op))
    return render_template_string(DOCS_PAGE, doc=doc, groups=list(groups.items()))


@ops_bp.get("/")
def index():
    """The drawing page for a browser (its Accept prefers HTML to JSON); for any other client,
    KServe V1's server liveness, ``{"status": "alive"}``, so KServe's V1 client works unchanged
    (``*/*``, or no Accept, gets JSON). Both say ``Vary: Accept``: a cache must not hand the one to
    a client that asked for the other."""
    preferred = request.accept_mimetypes.best_match(["application/json", "text/html", "application/xhtml+xml"])
    if preferred not in ("text/html", "application/xhtml+xml"):
        response = jsonify(status="alive")
    else:
        templates = Path(current_app.root_path) / (current_app.template_folder or "templates")
        if (templates / "index.html").is_file():
            response = send_from_directory(templates, "index.html")
        else:
            response = current_app.make_response(PLACEHOLDER)
    response.vary.add("Accept")
    return response


def init_app(app) -> None:
    app.extensions["scratchnet.openapi"] = openapi_document()
    app.register_blueprint(ops_bp)
