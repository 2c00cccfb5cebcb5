//! The SageMaker inference-component operations (docs/inference-components.md): their inputs,
//! and handlers that validate the wire, build `control` commands and render what `control`'s
//! queries answer. Dispatched from `sagemaker.rs`'s operation table.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::sagemaker::{ListInput, Row, check_image, check_tags, command, list_page};
use crate::control::app::App;
use crate::control::components::{self, CreateComponent, UpdateComponent};
use crate::control::{self, Command};
use crate::core::component::{self, ComponentRecord, ComponentSpecification, SpecVersion};
use crate::core::model::Tag;
use crate::error::ApiError;

/// `RuntimeConfig` of Create and Update (`InferenceComponentRuntimeConfig`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RuntimeConfigInput {
    copy_count: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateInferenceComponentInput {
    pub(crate) inference_component_name: String,
    pub(crate) endpoint_name: String,
    variant_name: Option<String>,
    specification: Option<ComponentSpecification>,
    specifications: Option<Vec<ComponentSpecification>>,
    runtime_config: Option<RuntimeConfigInput>,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ComponentNameInput {
    pub(crate) inference_component_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateInferenceComponentInput {
    pub(crate) inference_component_name: String,
    specification: Option<ComponentSpecification>,
    specifications: Option<Vec<ComponentSpecification>>,
    runtime_config: Option<RuntimeConfigInput>,
    deployment_config: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateRuntimeConfigInput {
    pub(crate) inference_component_name: String,
    desired_runtime_config: RuntimeConfigInput,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListComponentsInput {
    #[serde(flatten)]
    list: ListInput,
    endpoint_name_equals: Option<String>,
    variant_name_equals: Option<String>,
}

/// The specification of a request, validated; each inline container's image checked against
/// what the operator allows.
fn spec_of(
    app: &App,
    specification: Option<ComponentSpecification>,
    specifications: Option<Vec<ComponentSpecification>>,
) -> Result<SpecVersion, ApiError> {
    let v = component::spec_version(specification, specifications, 1)?;
    for (i, entry) in v.specs.iter().enumerate() {
        let base = if v.plural {
            format!("Specifications.{}", i + 1)
        } else {
            "Specification".to_string()
        };
        if let Some(member) = entry
            .compute_resource_requirements
            .as_ref()
            .and_then(|r| r.other.keys().next())
        {
            return Err(ApiError::validation(format!(
                "{base}.ComputeResourceRequirements.{member} is not supported by spillway: copies are given whole \
                 accelerator devices (NumberOfAcceleratorDevicesRequired)"
            )));
        }
        let at = if v.plural {
            format!("Specifications.{}.Container.Image", i + 1)
        } else {
            "Specification.Container.Image".to_string()
        };
        if let Some(c) = &entry.container {
            check_image(app, c.image.as_deref(), &at)?;
            if let Some(url) = &c.artifact_url
                && !url.starts_with("file://")
            {
                return Err(ApiError::validation(format!(
                    "{}.ArtifactUrl {url:?}: spillway's providers support file:// URLs (a directory or a .tar.gz)",
                    at.trim_end_matches(".Image")
                )));
            }
        }
    }
    Ok(v)
}

/// `CreateInferenceComponent`.
pub(crate) async fn create(app: &Arc<App>, input: CreateInferenceComponentInput) -> Result<Value, ApiError> {
    check_tags(&input.tags)?;
    let version = spec_of(app, input.specification, input.specifications)?;
    let Some(rc) = input.runtime_config else {
        return Err(ApiError::validation(
            "RuntimeConfig is required: spillway places RuntimeConfig.CopyCount copies (adapter components, which have \
             none, are not supported)",
        ));
    };
    let copies = component::copy_count(rc.copy_count, "RuntimeConfig.CopyCount")?;
    command(
        app,
        Command::CreateComponent(CreateComponent {
            name: input.inference_component_name,
            endpoint: input.endpoint_name,
            variant: input.variant_name,
            version,
            copies,
            tags: input.tags,
        }),
        Some("InferenceComponentArn"),
    )
    .await
}

/// `UpdateInferenceComponent`.
pub(crate) async fn update(app: &Arc<App>, input: UpdateInferenceComponentInput) -> Result<Value, ApiError> {
    let version = match (&input.specification, &input.specifications) {
        (None, None) => None,
        _ => Some(spec_of(app, input.specification, input.specifications)?),
    };
    let copies = input
        .runtime_config
        .map(|rc| component::copy_count(rc.copy_count, "RuntimeConfig.CopyCount"))
        .transpose()?;
    if version.is_none() && copies.is_none() && input.deployment_config.is_none() {
        return Err(ApiError::validation(
            "Specification, Specifications or RuntimeConfig is required: the request changes nothing",
        ));
    }
    command(
        app,
        Command::UpdateComponent(UpdateComponent {
            name: input.inference_component_name,
            version,
            copies,
            deployment_config: input.deployment_config,
        }),
        Some("InferenceComponentArn"),
    )
    .await
}

/// `UpdateInferenceComponentRuntimeConfig`.
pub(crate) async fn update_runtime_config(app: &Arc<App>, input: UpdateRuntimeConfigInput) -> Result<Value, ApiError> {
    let copies = component::copy_count(
        input.desired_runtime_config.copy_count,
        "DesiredRuntimeConfig.CopyCount",
    )?;
    command(
        app,
        Command::SetComponentCopies {
            name: input.inference_component_name,
            copies,
        },
        Some("InferenceComponentArn"),
    )
    .await
}

/// `DeleteInferenceComponent`.
pub(crate) async fn delete(app: &Arc<App>, input: ComponentNameInput) -> Result<Value, ApiError> {
    command(
        app,
        Command::DeleteComponent {
            name: input.inference_component_name,
        },
        None,
    )
    .await
}

/// One entry as `DescribeInferenceComponent` shows it (`InferenceComponentSpecificationSummary`):
/// the container as `DeployedImage`, `ArtifactUrl`, `Environment`.
fn summary(entry: &ComponentSpecification) -> Value {
    let mut v = serde_json::to_value(entry).unwrap_or_default();
    if let (Some(obj), Some(c)) = (v.as_object_mut(), &entry.container) {
        let mut cs = Map::new();
        if let Some(image) = &c.image {
            cs.insert(
                "DeployedImage".into(),
                json!({"SpecifiedImage": image, "ResolvedImage": image}),
            );
        }
        if let Some(url) = &c.artifact_url {
            cs.insert("ArtifactUrl".into(), json!(url));
        }
        if let Some(env) = &c.environment {
            cs.insert("Environment".into(), json!(env));
        }
        obj.insert("Container".into(), Value::Object(cs));
    }
    v
}

/// `DescribeInferenceComponent`.
pub(crate) async fn describe(app: &Arc<App>, input: ComponentNameInput) -> Result<Value, ApiError> {
    let rec: ComponentRecord = components::component(app, &input.inference_component_name)?;
    let copies = components::copies_of(app, &rec).await;
    let (current, per_type) = components::placement_status(&copies);
    let mut runtime = json!({"DesiredCopyCount": rec.desired_copies, "CurrentCopyCount": current});
    if !per_type.is_empty() {
        runtime["PlacementStatus"] = per_type
            .iter()
            .map(|(t, n)| json!({"InstanceType": t, "CurrentCopyCount": n}))
            .collect();
    }
    let mut out = json!({
        "InferenceComponentName": rec.name,
        "InferenceComponentArn": rec.arn,
        "EndpointName": rec.endpoint_name,
        "EndpointArn": rec.endpoint_arn,
        "VariantName": rec.variant_name,
        "RuntimeConfig": runtime,
        "CreationTime": rec.creation_time,
        "LastModifiedTime": rec.last_modified_time,
        "InferenceComponentStatus": rec.status.as_str(),
    });
    if rec.current.plural {
        out["Specifications"] = rec.current.specs.iter().map(summary).collect();
    } else if let Some(s) = rec.current.specs.first() {
        out["Specification"] = summary(s);
    }
    if let Some(r) = &rec.failure_reason {
        out["FailureReason"] = json!(r);
    }
    if let Some(d) = &rec.deployment_config {
        out["LastDeploymentConfig"] = d.clone();
    }
    Ok(out)
}

/// `ListInferenceComponents`: the common filters, sort and pagination, plus
/// `EndpointNameEquals` and `VariantNameEquals`.
pub(crate) async fn list(app: &Arc<App>, input: ListComponentsInput) -> Result<Value, ApiError> {
    let rows = control::components::components(app)?
        .into_iter()
        .filter(|r| {
            input
                .endpoint_name_equals
                .as_ref()
                .is_none_or(|e| *e == r.endpoint_name)
                && input.variant_name_equals.as_ref().is_none_or(|v| *v == r.variant_name)
        })
        .map(|r| Row {
            summary: json!({
                "CreationTime": r.creation_time,
                "InferenceComponentArn": r.arn,
                "InferenceComponentName": r.name,
                "EndpointArn": r.endpoint_arn,
                "EndpointName": r.endpoint_name,
                "VariantName": r.variant_name,
                "InferenceComponentStatus": r.status.as_str(),
                "LastModifiedTime": r.last_modified_time,
            }),
            name: r.name,
            created: r.creation_time,
            modified: r.last_modified_time,
            status: r.status.as_str(),
        })
        .collect();
    list_page("ListInferenceComponents", &input.list, rows, "InferenceComponents")
}
