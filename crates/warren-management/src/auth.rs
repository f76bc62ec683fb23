//! HTTP Basic authentication against the broker's users, and what each
//! tag lets a user do, as RabbitMQ's management plugin decides it:
//! `administrator` everything; `monitoring` sees every connection,
//! channel and node; `policymaker` manages policies and parameters in its
//! vhosts; `management` sees only its own vhosts and connections; a user
//! with none of these may not use the API. Authorisation failures are
//! 401, as in RabbitMQ 3.x.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use warren_core::VHost;
use warren_core::access::Account;
use warren_core::broker::LoginRefused;
use warren_core::password::base64_decode;

use crate::Shared;
use crate::error::ApiError;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub account: Arc<Account>,
}

impl Caller {
    /// Has the `administrator` tag.
    pub fn is_admin(&self) -> bool {
        self.account.has_tag("administrator")
    }

    /// Sees everything (`administrator` or `monitoring`).
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.account.has_tag("monitoring")
    }

    /// May manage policies (`administrator` or `policymaker`).
    pub fn is_policymaker(&self) -> bool {
        self.is_admin() || self.account.has_tag("policymaker")
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.account.name
    }

    /// 401 unless an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }

    /// 401 unless a monitor (or administrator).
    pub fn require_monitor(&self) -> Result<(), ApiError> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not monitor user"))
        }
    }

    /// 401 unless a policymaker (or administrator).
    pub fn require_policymaker(&self) -> Result<(), ApiError> {
        if self.is_policymaker() {
            Ok(())
        } else {
            Err(ApiError::not_authorised(
                "User not authorised to access object",
            ))
        }
    }

    /// Whether the user may log in to `vhost` (administrators: any).
    pub fn may_use_vhost(&self, state: &Shared, vhost: &str) -> bool {
        self.is_admin() || state.broker.permissions(self.name(), vhost).is_some()
    }

    /// The vhost a vhost-scoped path names: 404 if it does not exist, 401
    /// if the user may not use it.
    pub fn vhost(&self, state: &Shared, name: &str) -> Result<Arc<VHost>, ApiError> {
        let vh = state.broker.vhost(name).ok_or_else(ApiError::not_found)?;
        if !self.may_use_vhost(state, name) {
            return Err(ApiError::not_authorised(
                "User not authorised to access virtual host",
            ));
        }
        Ok(vh)
    }

    /// The vhosts whose contents the user may list, by name.
    pub fn visible_vhosts(&self, state: &Shared) -> Vec<Arc<VHost>> {
        let mut v: Vec<Arc<VHost>> = state
            .broker
            .vhosts()
            .into_iter()
            .filter(|v| self.may_use_vhost(state, &v.name))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// Splits an `Authorization: Basic ...` value into user and password.
pub fn parse_basic(value: &str) -> Option<(String, Vec<u8>)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(rest.trim())?;
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::no_credentials());
        };
        let (user, password) = value
            .to_str()
            .ok()
            .and_then(parse_basic)
            .ok_or_else(ApiError::login_failed)?;
        let loopback = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| c.0.ip().is_loopback());
        let account = match state.broker.authenticate(&user, &password, loopback) {
            Ok(a) => a,
            Err(LoginRefused::BadCredentials) => return Err(ApiError::login_failed()),
            Err(LoginRefused::NotFromLoopback) => {
                return Err(ApiError::not_authorised(
                    "User can only log in via localhost",
                ));
            }
        };
        let caller = Caller { account };
        let management = ["administrator", "monitoring", "policymaker", "management"];
        if !management.iter().any(|t| caller.account.has_tag(t)) {
            return Err(ApiError::not_authorised("Not management user"));
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        // "guest:gu:est" in base64.
        assert_eq!(
            parse_basic("Basic Z3Vlc3Q6Z3U6ZXN0"),
            Some(("guest".to_string(), b"gu:est".to_vec()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        // No colon.
        assert_eq!(parse_basic("Basic Z3Vlc3Q="), None);
    }
}
