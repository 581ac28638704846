"""The OpenAPI 3.1 document of the management API (``/api/openapi.json``),
built from one table of the endpoints (the same table docs/management.md shows)."""

from __future__ import annotations

from functools import cache
from typing import Any

_USER_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "password": {"type": "string"},
        "password_hash": {"type": "string"},
        "tags": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    },
}
_PERMISSION_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {k: {"type": "string"} for k in ("configure", "write", "read")},
    "required": ["configure", "write", "read"],
}

_OBJECTS: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
_DEFINITIONS_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        key: _OBJECTS
        for key in ("vhosts", "users", "permissions", "exchanges", "queues", "bindings")
    },
}
_QUEUE_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "durable": {"type": "boolean"},
        "auto_delete": {"type": "boolean"},
        "arguments": {"type": "object"},
    },
}
_EXCHANGE_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "durable": {"type": "boolean"},
        "auto_delete": {"type": "boolean"},
        "internal": {"type": "boolean"},
        "arguments": {"type": "object"},
    },
    "required": ["type"],
}
_BINDING_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {"routing_key": {"type": "string"}, "arguments": {"type": "object"}},
}
_BULK_DELETE_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {"users": {"type": "array", "items": {"type": "string"}}},
    "required": ["users"],
}

#: (method, path, summary, request body schema or None, answers)
ENDPOINTS: tuple[tuple[str, str, str, dict[str, Any] | None, tuple[int, ...]], ...] = (
    (
        "post",
        "/api/login",
        "Log in (the page): sets the session cookie",
        {"type": "object"},
        (200, 400, 401),
    ),
    ("post", "/api/logout", "End the page's session", None, (204,)),
    ("get", "/api/overview", "Totals, message rates, listeners, alarms", None, (200, 401)),
    ("get", "/api/rates", "Overview rates of the last samples (the chart)", None, (200, 401)),
    ("get", "/api/queues", "Every queue", None, (200, 401)),
    ("get", "/api/queues/{vhost}", "The queues of a vhost", None, (200, 401, 403, 404)),
    ("get", "/api/queues/{vhost}/{name}", "One queue", None, (200, 401, 403, 404)),
    (
        "put",
        "/api/queues/{vhost}/{name}",
        "Declare a queue: 201 made, 204 exists as asked, 400 exists otherwise or an "
        "argument brokerd does not offer",
        _QUEUE_BODY,
        (201, 204, 400, 401, 403, 404),
    ),
    (
        "delete",
        "/api/queues/{vhost}/{name}",
        "Delete a queue (if-empty=true, if-unused=true: 400 unless so)",
        None,
        (204, 400, 401, 403, 404),
    ),
    (
        "get",
        "/api/queues/{vhost}/{name}/bindings",
        "A queue's bindings, the default exchange's first",
        None,
        (200, 401, 403, 404),
    ),
    (
        "delete",
        "/api/queues/{vhost}/{name}/contents",
        "Purge a queue's ready messages",
        None,
        (204, 401, 403, 404),
    ),
    (
        "post",
        "/api/queues/{vhost}/{name}/get",
        "Peek at ready messages (not consumed)",
        {"type": "object"},
        (200, 400, 401, 403, 404),
    ),
    (
        "post",
        "/api/queues/{vhost}/{name}/redrive",
        "Move a dead-letter queue's messages back to their source",
        {"type": "object"},
        (200, 400, 401, 403, 404),
    ),
    ("get", "/api/exchanges", "Every exchange", None, (200, 401)),
    ("get", "/api/exchanges/{vhost}", "The exchanges of a vhost", None, (200, 401, 403, 404)),
    ("get", "/api/exchanges/{vhost}/{name}", "One exchange", None, (200, 401, 403, 404)),
    (
        "put",
        "/api/exchanges/{vhost}/{name}",
        "Declare an exchange: 201 made, 204 exists as asked, 400 exists otherwise",
        _EXCHANGE_BODY,
        (201, 204, 400, 401, 403, 404),
    ),
    (
        "delete",
        "/api/exchanges/{vhost}/{name}",
        "Delete an exchange and its bindings (if-unused=true: 400 while bound)",
        None,
        (204, 400, 401, 403, 404),
    ),
    (
        "get",
        "/api/exchanges/{vhost}/{name}/bindings/source",
        "The bindings an exchange routes by",
        None,
        (200, 401, 403, 404),
    ),
    (
        "get",
        "/api/exchanges/{vhost}/{name}/bindings/destination",
        "Bindings to an exchange: none (brokerd binds queues only)",
        None,
        (200, 401, 403, 404),
    ),
    (
        "post",
        "/api/exchanges/{vhost}/{name}/publish",
        "Publish one message",
        {"type": "object"},
        (200, 400, 401, 403, 404),
    ),
    ("get", "/api/bindings", "Every binding", None, (200, 401)),
    ("get", "/api/bindings/{vhost}", "The bindings of a vhost", None, (200, 401, 403, 404)),
    (
        "get",
        "/api/bindings/{vhost}/e/{exchange}/q/{queue}",
        "The bindings of a queue to an exchange",
        None,
        (200, 401, 403, 404),
    ),
    (
        "post",
        "/api/bindings/{vhost}/e/{exchange}/q/{queue}",
        "Bind a queue to an exchange: 201, Location names the binding's properties key",
        _BINDING_BODY,
        (201, 400, 401, 403, 404),
    ),
    (
        "get",
        "/api/bindings/{vhost}/e/{exchange}/q/{queue}/{props}",
        "One binding, by its properties key",
        None,
        (200, 401, 403, 404),
    ),
    (
        "delete",
        "/api/bindings/{vhost}/e/{exchange}/q/{queue}/{props}",
        "Unbind, by the binding's properties key",
        None,
        (204, 401, 403, 404),
    ),
    ("get", "/api/connections", "Open connections", None, (200, 401)),
    ("get", "/api/connections/{name}", "One connection", None, (200, 401, 404)),
    (
        "delete",
        "/api/connections/{name}",
        "Close a connection (administrators; others their own), X-Reason header to the peer",
        None,
        (204, 401, 403, 404),
    ),
    (
        "get",
        "/api/connections/{name}/channels",
        "A connection's channel (one per connection)",
        None,
        (200, 401, 404),
    ),
    ("get", "/api/consumers", "Consumers", None, (200, 401)),
    ("get", "/api/consumers/{vhost}", "The consumers of a vhost", None, (200, 401, 403, 404)),
    (
        "get",
        "/api/nodes",
        "This node: memory, disk, descriptors, sockets (monitoring)",
        None,
        (200, 401, 403),
    ),
    ("get", "/api/nodes/{name}", "One node (monitoring)", None, (200, 401, 403, 404)),
    ("get", "/api/channels", "Channels: one per connection", None, (200, 401)),
    ("get", "/api/channels/{name}", "One channel", None, (200, 401, 404)),
    ("get", "/api/users", "Users and their tags (administrators)", None, (200, 401, 403)),
    (
        "get",
        "/api/users/without-permissions",
        "Users without permissions on any vhost (administrators)",
        None,
        (200, 401, 403),
    ),
    (
        "post",
        "/api/users/bulk-delete",
        "Delete the users named (administrators)",
        _BULK_DELETE_BODY,
        (204, 400, 401, 403),
    ),
    (
        "get",
        "/api/users/{name}/permissions",
        "A user's permissions on every vhost (administrators)",
        None,
        (200, 401, 403, 404),
    ),
    ("get", "/api/users/{name}", "One user (administrators)", None, (200, 401, 403, 404)),
    (
        "put",
        "/api/users/{name}",
        "Create (201) or update (204) a user (administrators)",
        _USER_BODY,
        (201, 204, 400, 401, 403),
    ),
    (
        "delete",
        "/api/users/{name}",
        "Delete a user, closing its connections (administrators)",
        None,
        (204, 401, 403, 404),
    ),
    ("get", "/api/vhosts", "Vhosts", None, (200, 401)),
    ("get", "/api/vhosts/{name}", "One vhost", None, (200, 401, 404)),
    (
        "get",
        "/api/vhosts/{name}/connections",
        "The connections of a vhost",
        None,
        (200, 401, 403, 404),
    ),
    ("get", "/api/vhosts/{name}/channels", "The channels of a vhost", None, (200, 401, 403, 404)),
    (
        "get",
        "/api/vhosts/{name}/permissions",
        "The permissions on a vhost (administrators)",
        None,
        (200, 401, 403, 404),
    ),
    (
        "put",
        "/api/vhosts/{name}",
        "Create a vhost: 201, or 204 if it exists (administrators)",
        None,
        (201, 204, 400, 401, 403),
    ),
    (
        "delete",
        "/api/vhosts/{name}",
        "Delete a vhost and everything in it; '/' is refused (administrators)",
        None,
        (204, 400, 401, 403, 404),
    ),
    ("get", "/api/permissions", "Permissions (administrators)", None, (200, 401, 403)),
    (
        "get",
        "/api/permissions/{vhost}/{user}",
        "A user's permissions on a vhost (administrators)",
        None,
        (200, 401, 403, 404),
    ),
    (
        "put",
        "/api/permissions/{vhost}/{user}",
        "Set a user's permissions on a vhost: 201 new, 204 changed (administrators)",
        _PERMISSION_BODY,
        (201, 204, 400, 401, 403, 404),
    ),
    (
        "delete",
        "/api/permissions/{vhost}/{user}",
        "Clear a user's permissions on a vhost (administrators)",
        None,
        (204, 401, 403, 404),
    ),
    (
        "get",
        "/api/definitions",
        "Export vhosts, users (hashes), permissions, exchanges, queues, bindings (administrators)",
        None,
        (200, 401, 403),
    ),
    (
        "post",
        "/api/definitions",
        "Import vhosts, users, permissions, exchanges, queues, bindings; checked before "
        "anything is applied (administrators); 200 names what brokerd has no equivalent for",
        _DEFINITIONS_BODY,
        (200, 204, 400, 401, 403),
    ),
    (
        "get",
        "/api/definitions/{vhost}",
        "Export a vhost's queues, exchanges, bindings (administrators)",
        None,
        (200, 401, 403, 404),
    ),
    (
        "post",
        "/api/definitions/{vhost}",
        "Import users, permissions and topology into a vhost (administrators)",
        _DEFINITIONS_BODY,
        (200, 204, 400, 401, 403, 404),
    ),
    ("get", "/api/whoami", "The requester", None, (200, 401)),
    (
        "get",
        "/api/health/checks/alarms",
        "200 without alarms, 503 with them",
        None,
        (200, 401, 503),
    ),
    ("get", "/api/schedules", "Task schedules", None, (200, 401)),
    ("post", "/api/schedules/{vhost}/{name}/run", "Run a schedule now", None, (200, 401, 403, 404)),
    (
        "post",
        "/api/schedules/{vhost}/{name}/pause",
        "Pause a schedule (stored)",
        None,
        (200, 401, 403, 404),
    ),
    (
        "post",
        "/api/schedules/{vhost}/{name}/resume",
        "Resume a schedule from now",
        None,
        (200, 401, 403, 404),
    ),
    ("get", "/api/tasks", "Recent tasks (workers' events, then stored results)", None, (200, 401)),
    ("get", "/api/workers", "Workers seen in their events (-E)", None, (200, 401)),
    (
        "post",
        "/api/tasks/{vhost}/{id}/revoke",
        "Revoke a task",
        {"type": "object"},
        (200, 401, 403, 404),
    ),
    (
        "post",
        "/api/tasks/{vhost}/{id}/retry",
        "Retry a failed task: send its stored message again under the same id "
        "(409 if it is not failed or its message was not stored)",
        None,
        (200, 400, 401, 403, 404, 409, 503),
    ),
    ("get", "/api/openapi.json", "This document", None, (200,)),
)

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
}


@cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, answers in ENDPOINTS:
        op: dict[str, Any] = {"summary": summary, "responses": {}}
        params = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if body is not None:
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": body}},
            }
        # Any request may be malformed (400), or refused as cross-site (403).
        for status in sorted({*answers, 400, *((403,) if path != "/api/openapi.json" else ())}):
            content = {"application/json": {"schema": _ERROR if status >= 400 else {}}}
            op["responses"][str(status)] = (
                {"description": "No Content" if status == 204 else "Created"}
                if status in (201, 204)
                else {"description": "see docs/management.md", "content": content}
            )
        if path not in ("/api/login", "/api/openapi.json"):
            op["security"] = [{"basic": []}, {"cookie": []}]
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "brokerd management API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "brokerd_session"},
            }
        },
    }
