//! Runtime administration: the typed requests the management API calls to
//! change users, permissions and vhosts while the broker runs. Each change
//! takes effect at once (connections of a deleted user or vhost are
//! closed with 320 CONNECTION_FORCED, revoked permissions refuse the next
//! operation) and is submitted to the store in order with everything else.

use std::sync::Arc;

use crate::access::{Account, PermissionSpec, TopicPermissionSpec, UserLimits, VhostMeta};
use crate::broker::Broker;
use crate::password::Password;
use crate::persist::{AdminOp, PersistOp};
use crate::policy::Policy;
use crate::vhost::VHost;

/// Why an administrative request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is malformed or invalid (the text says why).
    #[error("{0}")]
    Invalid(String),
}

impl Broker {
    fn submit_admin(&self, op: AdminOp) {
        if let Some(d) = self.durability() {
            d.submit(PersistOp::Admin(op));
        }
    }

    /// Creates or replaces a user. A password in clear is hashed (RabbitMQ's
    /// salted SHA-256) before it is kept or stored. True if the user is new.
    pub fn put_user(&self, name: &str, password: Option<Password>, tags: Vec<String>) -> bool {
        let password = password.map(Password::hashed);
        let password_hash = password
            .as_ref()
            .and_then(Password::to_rabbitmq_hash)
            .unwrap_or_default();
        let created = self.access.put_user(Account {
            name: name.to_string(),
            password,
            tags: tags.clone(),
        });
        self.submit_admin(AdminOp::PutUser {
            name: name.to_string(),
            password_hash,
            tags,
        });
        created
    }

    /// Deletes a user with its permissions and limits, and closes its
    /// connections.
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        let perms = self.access.permission_specs(Some(name), None);
        let topic = self.access.topic_permission_specs(Some(name), None);
        let had_limits = self.access.user_limits(name).is_some_and(|l| !l.is_empty());
        if !self.access.delete_user(name) {
            return Err(AdminError::NotFound(format!("user '{name}'")));
        }
        if had_limits {
            self.submit_admin(AdminOp::PutUserLimits {
                user: name.to_string(),
                limits: UserLimits::default(),
            });
        }
        for p in perms {
            self.submit_admin(AdminOp::DeletePermission {
                user: p.user,
                vhost: p.vhost,
            });
        }
        for t in topic {
            self.submit_admin(AdminOp::DeleteTopicPermission {
                user: t.user,
                vhost: t.vhost,
                exchange: t.exchange,
            });
        }
        self.submit_admin(AdminOp::DeleteUser {
            name: name.to_string(),
        });
        let text = format!("user '{name}' is deleted");
        self.close_connections(|c| c.negotiated().user == name, &text);
        Ok(())
    }

    /// Sets a user's permissions in a vhost; both must exist.
    pub fn put_permissions(&self, spec: PermissionSpec) -> Result<(), AdminError> {
        self.need_user_and_vhost(&spec.user, &spec.vhost)?;
        self.access
            .put_permissions(spec.clone())
            .map_err(AdminError::Invalid)?;
        self.submit_admin(AdminOp::PutPermission(spec));
        Ok(())
    }

    /// Clears a user's permissions in a vhost.
    pub fn delete_permissions(&self, user: &str, vhost: &str) -> Result<(), AdminError> {
        if !self.access.delete_permissions(user, vhost) {
            return Err(AdminError::NotFound(format!(
                "permissions of user '{user}' in vhost '{vhost}'"
            )));
        }
        self.submit_admin(AdminOp::DeletePermission {
            user: user.to_string(),
            vhost: vhost.to_string(),
        });
        Ok(())
    }

    /// Sets a user's topic permissions for an exchange.
    pub fn put_topic_permissions(&self, spec: TopicPermissionSpec) -> Result<(), AdminError> {
        self.need_user_and_vhost(&spec.user, &spec.vhost)?;
        self.access
            .put_topic_permissions(spec.clone())
            .map_err(AdminError::Invalid)?;
        self.submit_admin(AdminOp::PutTopicPermission(spec));
        Ok(())
    }

    /// Clears a user's topic permissions in a vhost (for one exchange, or
    /// all).
    pub fn delete_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Result<(), AdminError> {
        let gone: Vec<TopicPermissionSpec> = self
            .access
            .topic_permission_specs(Some(user), Some(vhost))
            .into_iter()
            .filter(|t| exchange.is_none_or(|e| t.exchange == e))
            .collect();
        if gone.is_empty() {
            return Err(AdminError::NotFound(format!(
                "topic permissions of user '{user}' in vhost '{vhost}'"
            )));
        }
        self.access.delete_topic_permissions(user, vhost, exchange);
        for t in gone {
            self.submit_admin(AdminOp::DeleteTopicPermission {
                user: t.user,
                vhost: t.vhost,
                exchange: t.exchange,
            });
        }
        Ok(())
    }

    fn need_user_and_vhost(&self, user: &str, vhost: &str) -> Result<(), AdminError> {
        if self.access.user(user).is_none() {
            return Err(AdminError::NotFound(format!("user '{user}'")));
        }
        if self.vhost(vhost).is_none() {
            return Err(AdminError::NotFound(format!("vhost '{vhost}'")));
        }
        Ok(())
    }

    /// Creates a vhost, or updates its metadata. True if it is new.
    pub fn put_vhost(&self, meta: VhostMeta) -> (Arc<VHost>, bool) {
        let existed = self.vhost(&meta.name).is_some();
        let vh = self.vhost_or_create(&meta.name);
        vh.set_meta(meta);
        self.submit_admin(AdminOp::PutVhost(vh.meta()));
        (vh, !existed)
    }

    /// Sets a policy (or an operator policy) in a vhost, applied at once to
    /// what it matches. True if it is new.
    #[allow(
        clippy::too_many_arguments,
        reason = "a policy's fields, as the API names them"
    )]
    pub fn put_policy(
        &self,
        vhost: &str,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: warren_codec::FieldTable,
        operator: bool,
    ) -> Result<bool, AdminError> {
        let vh = self
            .vhost(vhost)
            .ok_or_else(|| AdminError::NotFound(format!("vhost '{vhost}'")))?;
        let policy = Policy::new(
            vhost, name, pattern, apply_to, priority, definition, operator,
        )
        .map_err(AdminError::Invalid)?;
        let op = AdminOp::PutPolicy {
            vhost: vhost.to_string(),
            name: name.to_string(),
            pattern: pattern.to_string(),
            apply_to: policy.apply_to.as_str().to_string(),
            priority,
            definition: policy.definition.clone(),
            operator,
        };
        let new = vh.put_policy(policy);
        self.submit_admin(op);
        Ok(new)
    }

    /// Sets (`Some`) or clears (`None`) one of a vhost's limits by
    /// RabbitMQ's name (`max-connections`, `max-queues`). Limits apply to
    /// what comes next: open connections and existing queues stay.
    pub fn set_vhost_limit(
        &self,
        vhost: &str,
        name: &str,
        value: Option<i64>,
    ) -> Result<(), AdminError> {
        let vh = self
            .vhost(vhost)
            .ok_or_else(|| AdminError::NotFound(format!("vhost '{vhost}'")))?;
        let mut limits = vh.limits();
        match name {
            "max-connections" => limits.max_connections = value,
            "max-queues" => limits.max_queues = value,
            other => {
                return Err(AdminError::Invalid(format!(
                    "Validation failed\n\n[{{<<\"{other}\">>,{}}}] are not recognised limit settings\n",
                    value.map_or_else(|| "none".to_string(), |v| v.to_string())
                )));
            }
        }
        vh.set_limits(limits);
        self.submit_admin(AdminOp::PutVhostLimits {
            vhost: vhost.to_string(),
            limits,
        });
        Ok(())
    }

    /// Sets (`Some`) or clears (`None`) one of a user's limits by
    /// RabbitMQ's name (`max-connections`, `max-channels`); clearing `all`
    /// clears both, as `rabbitmqctl clear_user_limits u all` does.
    /// Clearing a name that is no limit changes nothing, as in RabbitMQ.
    /// Limits apply to what opens next: connections and channels already
    /// open stay.
    pub fn set_user_limit(
        &self,
        user: &str,
        name: &str,
        value: Option<i64>,
    ) -> Result<(), AdminError> {
        // RabbitMQ validates the value before it looks for the user.
        if let Some(v) = value
            && !UserLimits::NAMES.contains(&name)
        {
            return Err(unrecognised_user_limits(&[(name, v)]));
        }
        let mut limits = self
            .access
            .user_limits(user)
            .ok_or_else(|| AdminError::NotFound(format!("user '{user}'")))?;
        match limits.get_mut(name) {
            Some(slot) => *slot = value,
            None if name == "all" => limits = UserLimits::default(),
            None => return Ok(()),
        }
        self.put_user_limits(user, limits)
    }

    /// Sets several of a user's limits at once (the others stay), as
    /// `rabbitmqctl set_user_limits` and a definitions import do; every
    /// name must be a user limit, or nothing changes.
    pub fn merge_user_limits(&self, user: &str, values: &[(&str, i64)]) -> Result<(), AdminError> {
        let unknown: Vec<(&str, i64)> = values
            .iter()
            .filter(|(n, _)| !UserLimits::NAMES.contains(n))
            .copied()
            .collect();
        if !unknown.is_empty() {
            return Err(unrecognised_user_limits(&unknown));
        }
        let mut limits = self
            .access
            .user_limits(user)
            .ok_or_else(|| AdminError::NotFound(format!("user '{user}'")))?;
        for (name, v) in values {
            if let Some(slot) = limits.get_mut(name) {
                *slot = Some(*v);
            }
        }
        self.put_user_limits(user, limits)
    }

    fn put_user_limits(&self, user: &str, limits: UserLimits) -> Result<(), AdminError> {
        if !self.access.set_user_limits(user, limits) {
            return Err(AdminError::NotFound(format!("user '{user}'")));
        }
        self.submit_admin(AdminOp::PutUserLimits {
            user: user.to_string(),
            limits,
        });
        Ok(())
    }

    /// Deletes a policy (or an operator policy).
    pub fn delete_policy(&self, vhost: &str, name: &str, operator: bool) -> Result<(), AdminError> {
        let vh = self
            .vhost(vhost)
            .ok_or_else(|| AdminError::NotFound(format!("vhost '{vhost}'")))?;
        if !vh.delete_policy(name, operator) {
            return Err(AdminError::NotFound(format!("policy '{name}'")));
        }
        self.submit_admin(AdminOp::DeletePolicy {
            vhost: vhost.to_string(),
            name: name.to_string(),
            operator,
        });
        Ok(())
    }

    /// Deletes a vhost with everything in it (durable queues and their
    /// messages included) and the permissions in it, and closes its
    /// connections.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
        let Some(vh) = self.remove_vhost(name) else {
            return Err(AdminError::NotFound(format!("vhost '{name}'")));
        };
        let text = format!("vhost '{name}' is deleted");
        self.close_connections(|c| c.negotiated().vhost == name, &text);
        vh.delete_everything();
        self.submit_admin(AdminOp::PutVhostLimits {
            vhost: name.to_string(),
            limits: crate::access::VhostLimits::default(),
        });
        for p in vh.policies() {
            self.submit_admin(AdminOp::DeletePolicy {
                vhost: name.to_string(),
                name: p.name.clone(),
                operator: p.operator,
            });
        }
        for p in self.access.permission_specs(None, Some(name)) {
            self.submit_admin(AdminOp::DeletePermission {
                user: p.user,
                vhost: p.vhost,
            });
        }
        for t in self.access.topic_permission_specs(None, Some(name)) {
            self.submit_admin(AdminOp::DeleteTopicPermission {
                user: t.user,
                vhost: t.vhost,
                exchange: t.exchange,
            });
        }
        self.access.forget_vhost(name);
        self.submit_admin(AdminOp::DeleteVhost {
            name: name.to_string(),
        });
        Ok(())
    }
}

/// RabbitMQ's refusal of names that are no user limit
/// (`rabbit_parameter_validation:proplist` on `user-limits`): the terms in
/// Erlang's notation, e.g. `Unrecognised terms [{<<"max-queues">>,5}] in
/// user-limits`.
fn unrecognised_user_limits(terms: &[(&str, i64)]) -> AdminError {
    let terms: Vec<String> = terms
        .iter()
        .map(|(n, v)| format!("{{<<\"{n}\">>,{v}}}"))
        .collect();
    AdminError::Invalid(format!(
        "Unrecognised terms [{}] in user-limits",
        terms.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use crate::access::UserLimits;
    use crate::broker::{Broker, BrokerConfig};
    use crate::password::Password;

    use super::AdminError;

    #[test]
    fn user_limits_are_set_one_by_one_or_merged_and_refuse_unknown_names() {
        let b = Broker::new(BrokerConfig::default());
        assert!(matches!(
            b.set_user_limit("nobody", "max-connections", Some(1)),
            Err(AdminError::NotFound(_))
        ));
        assert!(matches!(
            b.set_user_limit("nobody", "max-queues", Some(1)),
            Err(AdminError::Invalid(_))
        ));
        b.put_user("u", Some(Password::Plain("p".into())), Vec::new());
        b.set_user_limit("u", "max-channels", Some(10)).unwrap();
        b.set_user_limit("u", "max-connections", Some(2)).unwrap();
        assert_eq!(
            b.access.user_limits("u"),
            Some(UserLimits {
                max_connections: Some(2),
                max_channels: Some(10),
            })
        );
        assert_eq!(
            b.set_user_limit("u", "max-queues", Some(5)),
            Err(AdminError::Invalid(
                "Unrecognised terms [{<<\"max-queues\">>,5}] in user-limits".into()
            ))
        );
        // Clearing what is no limit is not an error; `all` clears both.
        b.set_user_limit("u", "max-queues", None).unwrap();
        b.set_user_limit("u", "max-connections", None).unwrap();
        assert_eq!(
            b.access.user_limits("u").map(|l| l.entries()),
            Some(vec![("max-channels", 10)])
        );
        b.set_user_limit("u", "all", None).unwrap();
        assert!(b.access.all_user_limits().is_empty());
        // A merge keeps what it does not name, and is all or nothing.
        b.merge_user_limits("u", &[("max-channels", 3)]).unwrap();
        b.merge_user_limits("u", &[("max-connections", -1)])
            .unwrap();
        assert!(
            b.merge_user_limits("u", &[("max-channels", 9), ("x", 1)])
                .is_err()
        );
        assert_eq!(
            b.access.user_limits("u"),
            Some(UserLimits {
                max_connections: Some(-1),
                max_channels: Some(3),
            })
        );
        b.delete_user("u").unwrap();
        assert!(b.access.all_user_limits().is_empty());
    }
}
