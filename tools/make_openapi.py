"""Writes jupyter_cifar/server/openapi.json (run after changing the API; a test holds routes to it)."""

import json
from pathlib import Path

from jupyter_cifar.engine.budget import MAX_MINUTES
from jupyter_cifar.engine.nets import PRESETS

STATES = ("queued", "running", "stopping", "finished", "stopped", "failed", "interrupted")

REF = {
    "name": "ref",
    "in": "path",
    "required": True,
    "description": "NAME, NAME:VERSION or NAME@ALIAS",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}([:@][A-Za-z0-9._-]{1,100})?$"},
}
NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
}
ALIAS = {
    "name": "alias",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def page_of(item):
    """One page of a list: its items, how many match in all, and where the page starts."""
    return {
        "type": "object",
        "required": ["items", "total", "offset", "limit"],
        "properties": {
            "items": {"type": "array", "items": ref(item)},
            "total": {"type": "integer"},
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
        },
    }


def json_response(description, schema):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes):
    """Every route can answer 403 (no token) and 503 (store down), plus its own codes."""
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in sorted({403, 503, *codes})}


JOB = {
    "name": "job",
    "in": "path",
    "required": True,
    "description": "a job's id",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
}
JOB_PATHS = {
    "/jupyter-cifar/api/jobs": {
        "get": {
            "summary": "Training jobs, newest first",
            "operationId": "listJobs",
            "parameters": [
                {
                    "name": "state",
                    "in": "query",
                    "schema": {"type": "array", "items": {"type": "string", "enum": list(STATES)}},
                    "style": "form",
                    "explode": True,
                    "description": "only jobs in these states (repeatable, or comma-separated)",
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                },
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
            ],
            "responses": {"200": json_response("One page of jobs", ref("JobPage")), **errors(400)},
        },
        "post": {
            "summary": "Queue a training job: the server runs it, it outlives the kernel",
            "operationId": "createJob",
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("JobSpec")}}},
            "responses": {"201": json_response("The queued job", ref("Job")), **errors(400, 413)},
        },
    },
    "/jupyter-cifar/api/jobs/{job}": {
        "get": {
            "summary": "One job",
            "operationId": "getJob",
            "parameters": [JOB],
            "responses": {"200": json_response("The job", ref("Job")), **errors(400, 404)},
        },
        "delete": {
            "summary": "Delete a job that is not running: its record, events and checkpoint (never a model)",
            "operationId": "deleteJob",
            "parameters": [JOB],
            "responses": {"200": json_response("What was deleted", ref("Job")), **errors(400, 404, 409)},
        },
    },
    "/jupyter-cifar/api/jobs/{job}/events": {
        "get": {
            "summary": "A job's events after N, in order; waits up to S seconds for one (long poll)",
            "operationId": "jobEvents",
            "parameters": [
                JOB,
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                {
                    "name": "wait",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 60, "default": 0},
                },
            ],
            "responses": {"200": json_response("Events", ref("JobEvents")), **errors(400, 404)},
        }
    },
    "/jupyter-cifar/api/jobs/{job}/stop": {
        "post": {
            "summary": "Stop a job: a queued one at once, a running one after its current batch",
            "operationId": "stopJob",
            "parameters": [JOB],
            "responses": {"200": json_response("The job", ref("Job")), **errors(400, 404, 409)},
        }
    },
    "/jupyter-cifar/api/jobs/{job}/resume": {
        "post": {
            "summary": "Queue an interrupted, stopped or failed job again, from its last checkpoint",
            "operationId": "resumeJob",
            "parameters": [JOB],
            "responses": {"200": json_response("The job", ref("Job")), **errors(400, 404, 409)},
        }
    },
}
PHOTO = {
    "name": "photo",
    "in": "path",
    "required": True,
    "description": "a photo's id",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
SET_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PHOTO_PATHS = {
    "/jupyter-cifar/api/photos": {
        "get": {
            "summary": "Photos of a set (every set's without set), oldest first",
            "operationId": "listPhotos",
            "parameters": [
                {"name": "set", "in": "query", "schema": SET_NAME},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
                },
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
            ],
            "responses": {"200": json_response("One page of photos", ref("PhotoPage")), **errors(400)},
        },
        "post": {
            "summary": "Keep a photo (the body: its own bytes, up to 15 MiB) with its label in a set; the "
            "same bytes again in the set relabel that photo",
            "operationId": "addPhoto",
            "parameters": [
                {
                    "name": "label",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "enum": CLASSES},
                },
                {"name": "set", "in": "query", "schema": {**SET_NAME, "default": "my-photos"}},
                {"name": "filename", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "origin",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["import", "correction"], "default": "import"},
                },
                {"name": "wrong_version", "in": "query", "schema": {"type": "string"}},
                {"name": "predicted", "in": "query", "schema": {"type": "string", "enum": CLASSES}},
            ],
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {"201": json_response("The photo kept", ref("Photo")), **errors(400, 413)},
        },
    },
    "/jupyter-cifar/api/photos/sets": {
        "get": {
            "summary": "The photo sets, with their counts per class",
            "operationId": "photoSets",
            "responses": {"200": json_response("The sets", ref("PhotoSets")), **errors()},
        }
    },
    "/jupyter-cifar/api/photos/{photo}": {
        "get": {
            "summary": "One photo's record",
            "operationId": "getPhoto",
            "parameters": [PHOTO],
            "responses": {"200": json_response("The photo", ref("Photo")), **errors(400, 404)},
        },
        "delete": {
            "summary": "Remove a photo",
            "operationId": "deletePhoto",
            "parameters": [PHOTO],
            "responses": {"200": json_response("What was removed", ref("Photo")), **errors(400, 404)},
        },
    },
    "/jupyter-cifar/api/photos/{photo}/file": {
        "get": {
            "summary": "A photo's bytes, as they were added",
            "operationId": "photoFile",
            "parameters": [PHOTO],
            "responses": {
                "200": {
                    "description": "The photo",
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                **errors(400, 404),
            },
        }
    },
}
PHOTO_SCHEMAS = {
    "Photo": {
        "type": "object",
        "required": [
            "id",
            "set",
            "label",
            "filename",
            "sha256",
            "size",
            "width",
            "height",
            "format",
            "origin",
        ],
        "properties": {
            "id": {"type": "string"},
            "set": {"type": "string"},
            "label": {"type": "string", "enum": CLASSES},
            "filename": {"type": "string"},
            "sha256": {"type": "string"},
            "size": {"type": "integer"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "format": {"type": "string"},
            "origin": {"type": "string", "enum": ["import", "correction"]},
            "who": {"type": "string"},
            "created": {"type": "string", "format": "date-time"},
            "wrong_version": {
                "type": "string",
                "nullable": True,
                "description": "the version that got it wrong",
            },
            "predicted": {"type": "string", "nullable": True, "description": "what that version answered"},
        },
    },
    "PhotoPage": page_of("Photo"),
    "PhotoSets": {
        "type": "object",
        "required": ["sets"],
        "properties": {
            "sets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "count", "counts"],
                    "properties": {
                        "name": {"type": "string"},
                        "count": {"type": "integer"},
                        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    },
                },
            }
        },
    },
}
NULLABLE_INT = {"type": "integer", "nullable": True}
JOB_SCHEMAS = {
    "JobSpec": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "preset": {"type": "string", "enum": list(PRESETS), "nullable": True},
            "epochs": {"type": "integer", "minimum": 1, "maximum": 1000, "nullable": True},
            "minutes": {
                "type": "number",
                "exclusiveMinimum": True,
                "minimum": 0,
                "maximum": MAX_MINUTES,
                "nullable": True,
                "description": "train for this long instead of for epochs (not with epochs), the learning "
                "rate's schedules spread over the time",
            },
            "batch_size": {"type": "integer", "minimum": 1, "maximum": 65536, "nullable": True},
            "learning_rate": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "nullable": True},
            "train_limit": {"type": "integer", "minimum": 1, "nullable": True},
            "test_limit": {"type": "integer", "minimum": 1, "nullable": True},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2147483647, "nullable": True},
            "data": {"type": "string", "nullable": True, "description": "the worker's CIFAR-10 folder"},
            "save": {"type": "string", "nullable": True, "description": "the name to save the model as"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "notes": {"type": "string"},
            "parent": {"type": "string", "nullable": True, "description": "a REF to continue from"},
            "photos": {
                "type": "string",
                "nullable": True,
                "description": "a photo set: fine-tune parent on it, with CIFAR-10 replay (needs parent)",
            },
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "state", "spec", "progress", "created", "executor"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": list(STATES)},
            "spec": ref("JobSpec"),
            "epoch": NULLABLE_INT,
            "epochs": NULLABLE_INT,
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "images_per_second": {"type": "number", "nullable": True},
            "eta_seconds": {"type": "number", "nullable": True},
            "created": {"type": "string", "format": "date-time"},
            "started": {"type": "string", "format": "date-time", "nullable": True},
            "ended": {"type": "string", "format": "date-time", "nullable": True},
            "executor": {"type": "string"},
            "worker": {"type": "object", "nullable": True},
            "model": {"type": "string", "nullable": True},
            "test_accuracy": {"type": "number", "nullable": True},
            "error": {"type": "string", "nullable": True},
            "events": {"type": "integer"},
        },
    },
    "JobPage": page_of("Job"),
    "JobEvents": {
        "type": "object",
        "required": ["job", "state", "last", "events"],
        "properties": {
            "job": {"type": "string"},
            "state": {"type": "string", "enum": list(STATES)},
            "last": {"type": "integer", "description": "the number of the last event given (after, if none)"},
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["seq", "type"],
                    "properties": {"seq": {"type": "integer", "description": "its number, from 1"}},
                },
            },
        },
    },
}

spec = {
    "openapi": "3.0.3",
    "info": {
        "title": "jupyter_cifar model store, training jobs and photo sets API",
        "version": "1",
        "description": "Served by the jupyter_cifar jupyter-server extension under "
        "<base_url>jupyter-cifar/api/. "
        "Authenticate like any Jupyter API request (token or session cookie + XSRF), or with the kernel "
        "token the extension gives to the kernels it starts (it opens this API only).",
    },
    "servers": [{"url": "/"}],
    "security": [{"token": []}],
    "paths": {
        "/jupyter-cifar/api/status": {
            "get": {
                "summary": "The extension's version and where its store is (never credentials)",
                "operationId": "status",
                "responses": {"200": json_response("Status", ref("Status")), **errors()},
            }
        },
        "/jupyter-cifar/api/openapi.json": {
            "get": {
                "summary": "This description",
                "operationId": "openapi",
                "responses": {"200": json_response("The OpenAPI document", {"type": "object"}), **errors()},
            }
        },
        "/jupyter-cifar/api/models": {
            "get": {
                "summary": "List and search versions",
                "operationId": "listVersions",
                "parameters": [
                    {
                        "name": "name",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "exact model name",
                    },
                    {
                        "name": "search",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 1000},
                        "description": "case-insensitive text in the name or the notes (at most 1000 "
                        "characters, no NUL)",
                    },
                    {
                        "name": "tag",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "style": "form",
                        "explode": True,
                        "description": "KEY=VALUE, repeatable (all must match)",
                    },
                    {
                        "name": "sort",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "default": "-created",
                            "enum": [
                                p + f
                                for f in ("created", "name", "version", "test_accuracy", "size")
                                for p in ("", "-")
                            ],
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                ],
                "responses": {"200": json_response("One page of versions", ref("Page")), **errors(400)},
            }
        },
        "/jupyter-cifar/api/uploads": {
            "post": {
                "summary": "Upload a .keras file's bytes (streamed); use the upload_id to create a version",
                "operationId": "upload",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                "responses": {"201": json_response("Received", ref("Upload")), **errors(400, 413)},
            }
        },
        "/jupyter-cifar/api/models/{name}": {
            "delete": {
                "summary": "Delete every version of a model, file bytes included",
                "operationId": "deleteModel",
                "parameters": [NAME],
                "responses": {
                    "200": json_response(
                        "What was deleted",
                        {
                            "type": "object",
                            "required": ["deleted"],
                            "properties": {"deleted": {"type": "array", "items": ref("ModelRecord")}},
                        },
                    ),
                    **errors(400, 404),
                },
            }
        },
        "/jupyter-cifar/api/models/{name}/versions": {
            "post": {
                "summary": "Create the next version of a model from an upload, or from the file itself",
                "operationId": "createVersion",
                "parameters": [
                    NAME,
                    {
                        "name": "tag",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "style": "form",
                        "explode": True,
                        "description": "with a raw body: KEY=VALUE, repeatable",
                    },
                    {
                        "name": "notes",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "with a raw body",
                    },
                    {
                        "name": "alias",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "style": "form",
                        "explode": True,
                        "description": "with a raw body",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": ref("NewVersion")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    "201": json_response("The new version", ref("ModelRecord")),
                    **errors(400, 404, 409, 413),
                },
            }
        },
        "/jupyter-cifar/api/models/{name}/aliases/{alias}": {
            "put": {
                "summary": "Point an alias at a version (moving it off any other)",
                "operationId": "setAlias",
                "parameters": [NAME, ALIAS],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["version"],
                                "additionalProperties": False,
                                "properties": {"version": {"type": "integer", "minimum": 1}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": json_response("The version, with its aliases", ref("ModelRecord")),
                    **errors(400, 404, 413),
                },
            },
            "delete": {
                "summary": "Remove an alias",
                "operationId": "removeAlias",
                "parameters": [NAME, ALIAS],
                "responses": {"204": {"description": "Removed"}, **errors(400, 404)},
            },
        },
        "/jupyter-cifar/api/versions/{ref}": {
            "get": {
                "summary": "One version's record",
                "operationId": "getVersion",
                "parameters": [REF],
                "responses": {"200": json_response("The record", ref("ModelRecord")), **errors(400, 404)},
            },
            "patch": {
                "summary": "Merge tags (null removes one) and/or replace the notes",
                "operationId": "updateVersion",
                "parameters": [REF],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "tags": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string", "nullable": True},
                                    },
                                    "notes": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": json_response("The record", ref("ModelRecord")),
                    **errors(400, 404, 413),
                },
            },
            "delete": {
                "summary": "Delete one version (NAME alone: its latest), file bytes included",
                "operationId": "deleteVersion",
                "parameters": [REF],
                "responses": {
                    "200": json_response("What was deleted", ref("ModelRecord")),
                    **errors(400, 404),
                },
            },
        },
        "/jupyter-cifar/api/versions/{ref}/file": {
            "get": {
                "summary": "Download the version as a standard .keras file (streamed, verified)",
                "operationId": "downloadVersion",
                "parameters": [REF],
                "responses": {
                    "200": {
                        "description": "The .keras file",
                        "headers": {
                            "ETag": {"schema": {"type": "string"}, "description": "the file's sha256, quoted"}
                        },
                        "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    **errors(400, 404, 409),
                },
            }
        },
        **JOB_PATHS,
        **PHOTO_PATHS,
    },
    "components": {
        "securitySchemes": {
            "token": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "'token <Jupyter token or kernel token>'",
            }
        },
        "schemas": {
            "ModelRecord": {
                "type": "object",
                "required": [
                    "name",
                    "version",
                    "created",
                    "sha256",
                    "size",
                    "aliases",
                    "tags",
                    "notes",
                    "test_accuracy",
                    "metadata",
                ],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "integer", "minimum": 1},
                    "created": {"type": "string", "format": "date-time"},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "size": {"type": "integer", "minimum": 0},
                    "aliases": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    "notes": {"type": "string"},
                    "test_accuracy": {"type": "number", "nullable": True},
                    "metadata": {
                        "type": "object",
                        "description": "architecture, hyperparameters, dataset, history, "
                        "per-class accuracy, class names, input shape, Keras/TensorFlow versions, "
                        "parent, saved_by",
                    },
                },
            },
            "Page": page_of("ModelRecord"),
            "Upload": {
                "type": "object",
                "required": ["upload_id", "size"],
                "properties": {"upload_id": {"type": "string"}, "size": {"type": "integer"}},
            },
            "NewVersion": {
                "type": "object",
                "required": ["upload_id"],
                "additionalProperties": False,
                "properties": {
                    "upload_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "metadata": {
                        "type": "object",
                        "description": "JSON nested at most 32 levels, integers within 64 bits; "
                        "test_accuracy, if given, a number",
                    },
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    "notes": {"type": "string"},
                    "aliases": {"type": "array", "items": {"type": "string"}},
                },
            },
            **JOB_SCHEMAS,
            **PHOTO_SCHEMAS,
            "Status": {
                "type": "object",
                "required": ["version", "store", "backend", "jobs"],
                "properties": {
                    "version": {"type": "string"},
                    "store": {"type": "string"},
                    "backend": {"type": "string"},
                    "jobs": {
                        "description": "whether this server runs training jobs (runs), and where; null "
                        "when its store keeps none",
                        "type": "object",
                        "nullable": True,
                        "required": ["executor", "runs"],
                        "properties": {
                            "executor": {"type": "string", "enum": ["local", "dask"]},
                            "runs": {"type": "boolean"},
                            "max_jobs": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "param": {"type": "string"},
                },
            },
        },
        "responses": {
            f"E{c}": json_response(d, ref("Error"))
            for c, d in {
                400: "Bad parameter",
                403: "Not authenticated, or a cross-site request (a browser session without the XSRF token, "
                "or from another origin)",
                404: "No such model, version, alias, upload, job or photo",
                409: "Conflict (a version saved with aliases and deleted meanwhile by another request; a "
                "job in a state that does not allow it), or a stored file failed its integrity check",
                413: "Upload over the limit (CifarExtension.max_upload_bytes), a JSON body over 8 MiB, or a "
                "photo over 15 MiB",
                503: "The store cannot be reached",
            }.items()
        },
    },
}

out = Path(__file__).resolve().parent.parent / "jupyter_cifar" / "server" / "openapi.json"
out.write_text(json.dumps(spec, indent=2) + "\n")
print(f"wrote {out}")
