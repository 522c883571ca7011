"""Why a job failed: the stable error codes and the client-facing messages of the worker's failures.

Clients see a stable message; what actually went wrong (the exception and its traceback) is logged by
the worker with the same error id, so a report from a client can be tied to the log line."""

from __future__ import annotations

GENERATION_FAILED = "generation_failed"  # the pipeline raised
MODEL_UNAVAILABLE = "model_unavailable"  # not downloaded, offline, bad path: the message says what to do
STORAGE_ERROR = "storage_error"  # the blob store or the database failed while the job ran
WORKER_LOST = "worker_lost"  # the lease expired on the last allowed attempt
DEADLINE_EXCEEDED = "deadline_exceeded"  # ran longer than EASEL_JOB_TIMEOUT_SECONDS
# The gateway (docs/gateway.md): a provider refused the request (its sanitised message is shown), or no
# provider of the job's route could serve it after retries and fallbacks.
UPSTREAM_REJECTED = "upstream_rejected"
UPSTREAM_UNAVAILABLE = "upstream_unavailable"
OUTPUT_REJECTED = "output_rejected"  # the output check (EASEL_OUTPUT_CHECK) refused an image; nothing stored


def output_rejected_message(reason: str) -> str:
    return f"An output image was refused by the server's output check: {reason}"


# Codes whose stored messages are written for clients (never an exception's text).
CLIENT_FACING = frozenset(
    {
        GENERATION_FAILED,
        MODEL_UNAVAILABLE,
        STORAGE_ERROR,
        WORKER_LOST,
        DEADLINE_EXCEEDED,
        UPSTREAM_REJECTED,
        UPSTREAM_UNAVAILABLE,
        OUTPUT_REJECTED,
    }
)


def generation_failed_message(error_id: str) -> str:
    return f"The model failed to generate this image (error id {error_id})"


def storage_error_message(error_id: str) -> str:
    return f"The image could not be stored or read; try again later (error id {error_id})"


def client_message(code: str | None, message: str | None) -> str:
    """The message to show a client for a failed job: its stored message when the code is one whose
    messages are written for clients, else a generic one."""
    if code in CLIENT_FACING and message:
        return message
    return "The generation failed"
