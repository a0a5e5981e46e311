"""Writes jupyter_cifar/server/openapi.json (run after changing the API; a test holds routes to it)."""

import json
from pathlib import Path

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


def json_response(description, schema):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes):
    """Every route can answer 403 (no token) and 503 (store down), plus its own codes."""
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in sorted({403, 503, *codes})}


spec = {
    "openapi": "3.0.3",
    "info": {
        "title": "jupyter_cifar model store API",
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
                        "schema": {"type": "string"},
                        "description": "case-insensitive text in the name or the notes",
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
                    **errors(400, 404, 413),
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
                    **errors(400, 404),
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
                "responses": {"200": json_response("The record", ref("ModelRecord")), **errors(400, 404)},
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
            "Page": {
                "type": "object",
                "required": ["items", "total", "offset", "limit"],
                "properties": {
                    "items": {"type": "array", "items": ref("ModelRecord")},
                    "total": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "limit": {"type": "integer"},
                },
            },
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
                    "upload_id": {"type": "string"},
                    "metadata": {"type": "object"},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    "notes": {"type": "string"},
                    "aliases": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Status": {
                "type": "object",
                "required": ["version", "store", "backend"],
                "properties": {
                    "version": {"type": "string"},
                    "store": {"type": "string"},
                    "backend": {"type": "string"},
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
                404: "No such model, version or alias",
                409: "Conflict, or a stored file failed its integrity check",
                413: "Upload over the limit",
                503: "The store cannot be reached",
            }.items()
        },
    },
}

out = Path(__file__).resolve().parent.parent / "jupyter_cifar" / "server" / "openapi.json"
out.write_text(json.dumps(spec, indent=2) + "\n")
print(f"wrote {out}")
