//! Who: connectd's users, the groups identity providers report, API keys.

use crate::roles::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub guid: String,
    pub provider: String,
    pub unique_id: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub role: Role,
    pub locked: bool,
    pub needs_provisioning: bool,
    pub created_time: i64,
    pub updated_time: i64,
    pub active_time: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub guid: String,
    pub provider: String,
    pub unique_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub guid: String,
    pub name: String,
    pub created_time: i64,
    pub last_used_time: Option<i64>,
}

/// A provider group as the login saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub unique_id: String,
    pub name: String,
}
