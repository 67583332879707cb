//! A conversation from memory, as a tree: from the signal that started it (as far up as memory
//! goes), each signal with the executions that handled it, and each execution with the signals
//! it emitted.

use axum::extract::State;
use serde::Serialize;
use swarm_schemas::{ExecutionId, ExecutionRecord, Signal, SignalId};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::executions::memory_error;
use crate::error::{ApiError, ErrorBody, Json, Path};

/// Signals a conversation tree holds at most; deeper or wider ones are cut (`truncated`).
const MAX_SIGNALS: usize = 500;
/// Steps up the lineage at most.
const MAX_DEPTH: usize = 64;

/// A conversation as a tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct Conversation {
    /// The conversation (`correlation_id`) of its signals.
    pub correlation_id: Uuid,
    /// The signal asked about, or the one whose execution was asked about.
    pub focus: Uuid,
    /// The execution asked about, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub focus_execution: Option<Uuid>,
    /// The topmost signal memory knows of: the one that started the conversation, unless memory
    /// no longer has the execution that emitted it (`complete` is then false).
    pub root: SignalNode,
    /// Whether `root` started the conversation (it was not emitted by an execution).
    pub complete: bool,
    /// Whether signals were left out (more than 500).
    pub truncated: bool,
}

/// A signal and what handled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignalNode {
    /// The signal's id.
    pub id: Uuid,
    /// The signal, when memory has an execution of it (a signal no unit took is known by its
    /// id only, from the execution that emitted it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// Its executions, oldest first.
    #[schema(no_recursion)]
    pub executions: Vec<ExecutionNode>,
}

/// An execution and the signals it emitted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionNode {
    /// The execution.
    pub execution: ExecutionRecord,
    /// The signals it emitted, in order.
    #[schema(no_recursion)]
    pub emitted: Vec<SignalNode>,
}

/// The conversation of an execution.
#[utoipa::path(
    get,
    path = "/v1/executions/{id}/conversation",
    tag = "executions",
    params(("id" = uuid::Uuid, Path, description = "The execution's id")),
    responses(
        (status = 200, body = Conversation),
        (status = 400, description = "Not an execution id", body = ErrorBody),
        (status = 404, description = "No such execution in memory", body = ErrorBody),
        (status = 503, description = "Memory cannot be reached", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn of_execution(
    State(state): State<AppState>,
    Path(id): Path<ExecutionId>,
) -> Result<Json<Conversation>, ApiError> {
    let execution = state
        .memory
        .execution(id)
        .await
        .map_err(memory_error)?
        .ok_or_else(|| {
            ApiError::not_found("unknown_execution", format!("no execution {id} in memory"))
        })?;
    let mut conversation = conversation(&state, execution.signal).await?;
    conversation.focus_execution = Some(id);
    Ok(Json(conversation))
}

/// The conversation of a signal that memory has an execution of.
#[utoipa::path(
    get,
    path = "/v1/signals/{id}/conversation",
    tag = "executions",
    params(("id" = uuid::Uuid, Path, description = "The signal's id")),
    responses(
        (status = 200, body = Conversation),
        (status = 400, description = "Not a signal id", body = ErrorBody),
        (status = 404, description = "Memory has no execution of that signal", body = ErrorBody),
        (status = 503, description = "Memory cannot be reached", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn of_signal(
    State(state): State<AppState>,
    Path(id): Path<SignalId>,
) -> Result<Json<Conversation>, ApiError> {
    let executions = state.memory.executions_of(id).await.map_err(memory_error)?;
    let signal = executions
        .into_iter()
        .next()
        .map(|execution| execution.signal)
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_signal",
                format!("memory has no execution of signal {id}"),
            )
        })?;
    Ok(Json(conversation(&state, signal).await?))
}

/// Walks up from `focus` to the topmost signal memory knows, then down from it.
async fn conversation(state: &AppState, focus: Signal) -> Result<Conversation, ApiError> {
    let memory = &state.memory;
    let (correlation_id, focus_id) = (focus.correlation_id, focus.id);
    let mut root = focus;
    let mut complete = true;
    for _ in 0..MAX_DEPTH {
        let Some(parent) = root.parent_execution else {
            break;
        };
        match memory.execution(parent).await.map_err(memory_error)? {
            Some(execution) => root = execution.signal,
            None => {
                complete = false;
                break;
            }
        }
    }
    complete &= root.parent_execution.is_none();
    let mut walk = Walk {
        left: MAX_SIGNALS,
        truncated: false,
    };
    let root = down(state, root.id, Some(root), &mut walk).await?;
    Ok(Conversation {
        correlation_id,
        focus: focus_id,
        focus_execution: None,
        root,
        complete,
        truncated: walk.truncated,
    })
}

/// How much of the tree may still be walked.
struct Walk {
    /// Signals.
    left: usize,
    /// Whether some were left out.
    truncated: bool,
}

/// The tree below a signal, depth first, within the walk's budget.
async fn down(
    state: &AppState,
    id: SignalId,
    signal: Option<Signal>,
    walk: &mut Walk,
) -> Result<SignalNode, ApiError> {
    walk.left = walk.left.saturating_sub(1);
    let mut executions = state.memory.executions_of(id).await.map_err(memory_error)?;
    executions.sort_by_key(|e| e.started_at);
    let signal = signal.or_else(|| executions.first().map(|e| e.signal.clone()));
    let mut nodes = Vec::with_capacity(executions.len());
    for execution in executions {
        let mut emitted = Vec::with_capacity(execution.emitted.len());
        for child in &execution.emitted {
            if walk.left == 0 {
                walk.truncated = true;
                break;
            }
            emitted.push(Box::pin(down(state, *child, None, walk)).await?);
        }
        nodes.push(ExecutionNode { execution, emitted });
    }
    Ok(SignalNode {
        id,
        signal,
        executions: nodes,
    })
}
