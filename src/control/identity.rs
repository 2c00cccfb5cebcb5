//! STUB (integration scaffold; replaced by the identity commands at merge).
#![allow(missing_docs)]
use super::ControlError;
use super::app::App;
pub fn bootstrap_admin(app: &App) -> Result<Option<(String, String)>, ControlError> {
    let _ = app;
    Ok(None)
}
