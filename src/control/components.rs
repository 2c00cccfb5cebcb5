//! Inference components: their commands, queries and the placement of their copies on an
//! endpoint's fleet (docs/inference-components.md).

use std::sync::Arc;

use super::{App, ControlError, Outcome, ResourceKind};
use crate::core::component::ComponentRecord;

/// The component `name`, or `NotFound`.
pub fn component(app: &App, name: &str) -> Result<ComponentRecord, ControlError> {
    app.store
        .get::<ComponentRecord>(crate::store::Kind::InferenceComponent, name)?
        .ok_or_else(|| ControlError::NotFound {
            kind: ResourceKind::InferenceComponent,
            arn: app.arn("inference-component", name),
        })
}

/// `SetComponentCopies`: a new desired copy count.
pub(super) async fn set_copies(app: &Arc<App>, name: &str, copies: u32) -> Result<Outcome, ControlError> {
    let _ = (component(app, name)?, copies);
    Err(ControlError::ObjectNotFound("not yet built".into()))
}
