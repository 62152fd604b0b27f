// Team connector management under /api/v1/connectors (admins), the audit
// log, the event stream and configuration reload (DESIGN.md "Team connector
// management"). Every change an admin makes is audited in the same
// transaction; toggles emit appEnabled/appDisabled.
#pragma once

#include <vector>

#include "api/route.hpp"

namespace cm {

/// GET /api/v1/connectors, /active, /inactive (admin).
void connectors_all(const call& c);
void connectors_active(const call& c);
void connectors_inactive(const call& c);

/// GET|PUT /api/v1/connectors/config/{connectorName} (admin).
void connector_config_get(const call& c);
void connector_config_put(const call& c);

/// GET /api/v1/connectors/schema/{connectorName} (admin).
void connector_schema_get(const call& c);

/// POST /api/v1/connectors/toggle/{connectorName} (admin).
void connector_toggle(const call& c);

/// GET|POST /api/v1/connectors/filters/{connectorName} (admin).
void connector_filters_get(const call& c);
void connector_filters_post(const call& c);

/// POST /api/v1/connectors/getTokenFromCode (admin; OpenID Connect
/// providers such as Google Workspace).
void get_token_from_code(const call& c);

/// POST /api/v1/connectors/updateAppConfig (service, FETCH_CONFIG).
void update_app_config(const call& c);

/// GET /api/v1/audit (admin): the team's audit log, newest first.
void audit_list(const call& c);

/// GET /api/v1/events (admin: the team's events; service: every team's,
/// or ?orgId=…): Server-Sent Events, resumable with Last-Event-ID.
void events_stream(const call& c);

/// The routes above with their documentation.
std::vector<api::route> connector_routes();

} // namespace cm
