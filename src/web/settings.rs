//! `/targets` and `/channels`: where backups go and who hears about them, secrets masked as the
//! API masks them.

use actix_web::{web, HttpResponse};
use maud::html;

use super::layout::{page, PageError, Refresh};
use super::session::Viewer;
use crate::http::State;

fn config(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub async fn targets(state: web::Data<State>, viewer: Viewer) -> Result<HttpResponse, PageError> {
    let org = viewer.org()?;
    let rows = state
        .engine
        .store()
        .list_target_records(Some(org), None, 500)
        .await?;
    let body = html! {
        p.muted { "Targets are created and changed through the API; secrets are never shown." }
        div.scroll { table {
            thead { tr { th { "Name" } th { "Kind" } th { "Owner" } th { "Configuration" } } }
            tbody { @for record in rows {
                @let t = crate::http::targets_json::view(record);
                tr {
                    td { (t.name) @if t.is_default { " " span.badge.success { "default" } } }
                    td { (serde_json::to_value(t.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                    td { @if t.organization_id.is_none() { "system" } @else { "this organization" } }
                    td { pre { (config(&t.config)) } }
                }
            } }
        } }
    };
    Ok(page("Targets", Some(&viewer), Refresh::No, body))
}

pub async fn channels(state: web::Data<State>, viewer: Viewer) -> Result<HttpResponse, PageError> {
    let org = viewer.org()?;
    let rows = state.engine.store().list_channels(org).await?;
    let body = html! {
        p.muted { "Channels are created and deleted through the API; secrets are never shown." }
        @if rows.is_empty() { p { "No notification channels: failures reach nobody." } } @else {
            div.scroll { table {
                thead { tr { th { "Kind" } th { "Configuration" } } }
                tbody { @for c in rows {
                    @let c = crate::http::channels::view(c);
                    tr {
                        td { (serde_json::to_value(c.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                        td { pre { (config(&c.config)) } }
                    }
                } }
            } }
        }
    };
    Ok(page("Notifications", Some(&viewer), Refresh::No, body))
}
