//! The shapes that the JSON API and the HTML pages share: how a user and a
//! time look in Connect's answers, and a new password user's request with
//! its checks (an administrator's `POST /users` and self-registration).
//! May import `http`'s state and errors and the plain types below `http`.

use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::identity::plausible_username;
use crate::model::User;

/// A Unix time as Connect's API writes it (RFC 3339, whole seconds).
pub fn time(seconds: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64))
        .to_string()
}

/// A user as Connect's API shows one. Email is shown to the user themself
/// and to administrators only.
pub fn user_json(user: &User, show_email: bool) -> Value {
    json!({
        "guid": user.guid,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": if show_email { user.email.as_str() } else { "" },
        "user_role": user.role.as_str(),
        "created_time": time(user.created_time),
        "updated_time": time(user.updated_time),
        "active_time": user.active_time.map(time),
        "confirmed": true,
        "locked": user.locked,
    })
}

#[derive(Deserialize)]
pub struct NewPasswordUser {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub user_role: Option<String>,
}

/// Checks a new password user's name and password.
pub fn check_new_password_user(app: &AppState, new: &NewPasswordUser) -> Result<(), ApiError> {
    if !plausible_username(&new.username)
        || new.username.trim() != new.username
        || new.username.contains(['/', ':', '@'])
    {
        return Err(ApiError::bad_request(
            "The username must be 1 to 255 characters without spaces at either end, control \
             characters, '/', ':' or '@'.",
        ));
    }
    if new.password.chars().count() < app.settings.password_min_length {
        return Err(ApiError::bad_request(format!(
            "The password must be at least {} characters long.",
            app.settings.password_min_length
        )));
    }
    Ok(())
}
