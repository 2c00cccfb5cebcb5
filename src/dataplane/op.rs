//! The one typed entry of every invocation: [`RuntimeOp`], parsed once from a request's method
//! and path by [`RuntimeOp::parse`], the same parser for the fast path and for connections
//! served by hyper.

use crate::core::iam::{Action, Arns, Operation, Resource};

/// How an invocation's answer goes back to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `InvokeEndpoint`: the model's body as it is.
    Plain,
    /// `InvokeEndpointWithResponseStream`: event-stream `PayloadPart` messages.
    EventStream,
    /// `InvokeEndpointAsync`: accepted into the durable queue, answered 202 with where the
    /// output will be.
    Async,
}

/// A SageMaker Runtime operation: what an invocation asks for, and on which endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeOp<'a> {
    /// `POST /endpoints/{endpoint}/invocations`.
    InvokeEndpoint {
        /// `EndpointName`, from the path as it was sent (not percent-decoded).
        endpoint: &'a str,
    },
    /// `POST /endpoints/{endpoint}/invocations-response-stream`.
    InvokeEndpointWithResponseStream {
        /// `EndpointName`, from the path as it was sent (not percent-decoded).
        endpoint: &'a str,
    },
    /// `POST /endpoints/{endpoint}/async-invocations`.
    InvokeEndpointAsync {
        /// `EndpointName`, from the path as it was sent (not percent-decoded).
        endpoint: &'a str,
    },
}

/// What a request's method and path ask of the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// An invocation.
    Invocation(RuntimeOp<'a>),
    /// An invocation path with a method other than `POST` (answered 405, `Allow: POST`).
    MethodNotAllowed,
    /// Not a runtime request: the control plane's or the admin API's.
    Other,
}

impl<'a> RuntimeOp<'a> {
    /// What `method` on `path` (the path alone, no query) asks for. An invocation path is
    /// `/endpoints/{name}/invocations`, `/endpoints/{name}/invocations-response-stream` or
    /// `/endpoints/{name}/async-invocations`, the name a non-empty segment without `/`, `?` or
    /// `#`.
    pub fn parse(method: &str, path: &'a str) -> Target<'a> {
        let Some(rest) = path.strip_prefix("/endpoints/") else {
            return Target::Other;
        };
        let (endpoint, mode) = if let Some(n) = rest.strip_suffix("/invocations") {
            (n, Mode::Plain)
        } else if let Some(n) = rest.strip_suffix("/invocations-response-stream") {
            (n, Mode::EventStream)
        } else if let Some(n) = rest.strip_suffix("/async-invocations") {
            (n, Mode::Async)
        } else {
            return Target::Other;
        };
        if endpoint.is_empty() || endpoint.contains(['/', '?', '#']) {
            return Target::Other;
        }
        if method != "POST" {
            return Target::MethodNotAllowed;
        }
        Target::Invocation(Self::new(mode, endpoint))
    }

    /// The operation of `mode` on `endpoint`: how a server that parsed a request with
    /// [`RuntimeOp::parse`] and kept only its parts (the fast path keeps offsets into its
    /// buffer) puts it back together.
    pub(in crate::dataplane) fn new(mode: Mode, endpoint: &'a str) -> Self {
        match mode {
            Mode::Plain => Self::InvokeEndpoint { endpoint },
            Mode::EventStream => Self::InvokeEndpointWithResponseStream { endpoint },
            Mode::Async => Self::InvokeEndpointAsync { endpoint },
        }
    }

    /// The endpoint it invokes.
    pub fn endpoint_name(&self) -> &'a str {
        match *self {
            Self::InvokeEndpoint { endpoint }
            | Self::InvokeEndpointWithResponseStream { endpoint }
            | Self::InvokeEndpointAsync { endpoint } => endpoint,
        }
    }

    /// How its answer goes back.
    pub fn mode(&self) -> Mode {
        match self {
            Self::InvokeEndpoint { .. } => Mode::Plain,
            Self::InvokeEndpointWithResponseStream { .. } => Mode::EventStream,
            Self::InvokeEndpointAsync { .. } => Mode::Async,
        }
    }
}

impl Operation for RuntimeOp<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::InvokeEndpoint { .. } => "InvokeEndpoint",
            Self::InvokeEndpointWithResponseStream { .. } => "InvokeEndpointWithResponseStream",
            Self::InvokeEndpointAsync { .. } => "InvokeEndpointAsync",
        }
    }

    fn action(&self) -> Action {
        Action {
            service: "sagemaker",
            name: self.name(),
        }
    }

    fn resource(&self, arns: &Arns) -> Resource {
        arns.resource("endpoint", self.endpoint_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_paths_are_parsed_into_operations() {
        let op = |m, p| RuntimeOp::parse(m, p);
        assert_eq!(
            op("POST", "/endpoints/ep-1/invocations"),
            Target::Invocation(RuntimeOp::InvokeEndpoint { endpoint: "ep-1" })
        );
        let stream = op("POST", "/endpoints/e/invocations-response-stream");
        assert_eq!(
            stream,
            Target::Invocation(RuntimeOp::InvokeEndpointWithResponseStream { endpoint: "e" })
        );
        let Target::Invocation(stream) = stream else {
            unreachable!()
        };
        assert_eq!(
            (
                stream.name(),
                stream.action().to_string(),
                stream.endpoint_name(),
                stream.mode()
            ),
            (
                "InvokeEndpointWithResponseStream",
                "sagemaker:InvokeEndpointWithResponseStream".to_string(),
                "e",
                Mode::EventStream
            )
        );
        let Target::Invocation(plain) = op("POST", "/endpoints/a%2Db/invocations") else {
            panic!("a name is taken as it was sent")
        };
        assert_eq!(
            (plain.name(), plain.action().to_string(), plain.endpoint_name()),
            ("InvokeEndpoint", "sagemaker:InvokeEndpoint".to_string(), "a%2Db")
        );
        let arns = Arns {
            region: "eu-west-1".into(),
            account_id: "111122223333".into(),
        };
        assert_eq!(
            plain.resource(&arns).to_string(),
            "arn:aws:sagemaker:eu-west-1:111122223333:endpoint/a%2db"
        );
        let Target::Invocation(queued) = op("POST", "/endpoints/e/async-invocations") else {
            panic!("an asynchronous invocation path")
        };
        assert_eq!(
            (queued.name(), queued.action().to_string(), queued.mode()),
            (
                "InvokeEndpointAsync",
                "sagemaker:InvokeEndpointAsync".to_string(),
                Mode::Async
            )
        );
        assert_eq!(RuntimeOp::new(Mode::Async, "e"), queued);
        assert_eq!(op("GET", "/endpoints/e/async-invocations"), Target::MethodNotAllowed);
        assert_eq!(op("GET", "/endpoints/e/invocations"), Target::MethodNotAllowed);
        assert_eq!(
            op("HEAD", "/endpoints/e/invocations-response-stream"),
            Target::MethodNotAllowed
        );
        for path in [
            "/",
            "/endpoints/e/invocations/",
            "/endpoints//invocations",
            "/endpoints/a/b/invocations",
            "/endpoints/e/invocations?x=1",
            "/endpoints/e?/invocations",
            "/endpoints/e/invocation",
            "/endpoints/e/async-invocations/",
            "/endpoints/async-invocations",
            "/_spillway/health",
            "endpoints/e/invocations",
        ] {
            assert_eq!(op("POST", path), Target::Other, "{path}");
            assert_eq!(op("GET", path), Target::Other, "{path}");
        }
    }
}
