//! One call to Qpien, from the operation to its typed answer: the caller's authority
//! (the service's token, renewed once on `TOKEN_EXPIRED`, or the caller's bearer), the
//! rate budget and the circuit breaker before each exchange, retries of reads, and the
//! whole-call deadline over all of it.

use std::time::Duration;

use actix_web::web::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::Instrument;

use super::{BudgetWait, QpienClient};
use crate::settings::{ClientCredentials, Secret};
use crate::upstream::UpstreamError;
use crate::upstream::answer;
use crate::upstream::budget::{Admission, Class};
use crate::upstream::credential::{CallerShare, Credential, CredentialId};
use crate::upstream::error::whole_seconds;
use crate::upstream::operations::{GENERATE_OAUTH_TOKEN, Operation};
use crate::upstream::retry::RetryPolicy;
use crate::upstream::wire::WireToken;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What one call needs besides the operation: whose budget it spends and whether it may
/// wait for it, the bearer, the request id and the instant by which it must be over.
struct Attempt<'a> {
    bearer: Option<&'a Secret>,
    budget_key: CredentialId,
    /// The caller key that asked, whose share the call spends too.
    caller: Option<&'a CallerShare>,
    may_wait: bool,
    request_id: &'a str,
    deadline: Instant,
}

impl QpienClient {
    /// One operation under the right authority, over by `deadline` (the request's,
    /// `QPIEN_TIMEOUT_MS` from its start) whatever happens: token renewal, budget waits
    /// and retries all happen inside it.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        op: &Operation,
        variables: &impl Serialize,
        credential: &Credential,
        request_id: &str,
        wait: BudgetWait,
        deadline: Instant,
    ) -> Result<T, UpstreamError> {
        // A request whose deadline has passed (waiting for a lock, say) spends nothing.
        if Instant::now() >= deadline {
            return Err(UpstreamError::Timeout);
        }
        let body = op.request_body(variables);
        let attempt = Attempt {
            bearer: None,
            budget_key: credential.id(),
            caller: credential.caller(),
            may_wait: wait == BudgetWait::Allowed,
            request_id,
            deadline,
        };
        match timeout_at(deadline, self.authorized(op, &body, credential, attempt)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// In service mode a `TOKEN_EXPIRED` answer renews the token once and repeats the
    /// call: Qpien refused the call before running it, so even a mutation is safe to send
    /// again. In pass-through mode the caller's bearer goes as it came (a missing one only
    /// for the readiness probe).
    async fn authorized<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &Bytes,
        credential: &Credential,
        attempt: Attempt<'_>,
    ) -> Result<T, UpstreamError> {
        let Some(tokens) = &self.tokens else {
            let bearer = credential.bearer();
            let result = self
                .with_retries(op, body, &Attempt { bearer, ..attempt })
                .await;
            // What Qpien said of the caller's bearer (not of the probe's missing one).
            if let (Some(proofs), Some(_)) = (&self.proofs, bearer) {
                proofs.learn(credential.id(), &result);
            }
            return result;
        };
        let generate = async |creds: &ClientCredentials| self.generate_token(creds, &attempt).await;
        let with_token = async |token: &Secret| {
            let attempt = Attempt {
                bearer: Some(token),
                ..attempt
            };
            self.with_retries(op, body, &attempt).await
        };
        let token = tokens.token(generate).await?;
        match with_token(&token).await {
            Err(UpstreamError::Unauthorized {
                code: "TOKEN_EXPIRED",
                ..
            }) => {
                tracing::info!(
                    upstream.operation = op.name,
                    "Qpien says the token expired; renewing once"
                );
                tokens.discard(&token).await;
                with_token(&tokens.token(generate).await?).await
            }
            other => other,
        }
    }

    async fn generate_token(
        &self,
        creds: &ClientCredentials,
        attempt: &Attempt<'_>,
    ) -> Result<(Secret, Duration), UpstreamError> {
        let body = GENERATE_OAUTH_TOKEN.request_body(
            &json!({ "clientId": creds.client_id, "clientSecret": creds.client_secret.expose() }),
        );
        let result: Result<WireToken, _> = self
            .with_retries(
                &GENERATE_OAUTH_TOKEN,
                &body,
                // The service's token serves every caller: no key's share pays for it.
                &Attempt {
                    bearer: None,
                    caller: None,
                    may_wait: true,
                    ..*attempt
                },
            )
            .await;
        let outcome = result.as_ref().map_or_else(UpstreamError::kind, |_| "ok");
        self.metrics
            .token_renewals
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
        let token = result?;
        let lifetime = u64::try_from(token.expires_in)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                UpstreamError::InvalidResponse(format!(
                    "token lifetime {} is not positive",
                    token.expires_in
                ))
            })?;
        tracing::info!(
            token.lifetime_secs = lifetime.as_secs(),
            "obtained a new upstream access token"
        );
        Ok((Secret::new(token.access_token), lifetime))
    }

    /// Reads are repeated after transient failures, within the retry budget and only
    /// while the backoff still ends before the deadline.
    async fn with_retries<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &Bytes,
        attempt: &Attempt<'_>,
    ) -> Result<T, UpstreamError> {
        self.retry.earn();
        let mut retries = 0;
        loop {
            let error = match self.guarded(op, body, attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !op.read_only || !self.retry.may_retry(&error, retries) {
                return Err(error);
            }
            retries += 1;
            let delay = RetryPolicy::delay(retries);
            if Instant::now() + delay >= attempt.deadline {
                return Err(error);
            }
            tracing::info!(upstream.operation = op.name, retry = retries, delay_ms = delay.as_millis() as u64, error = %error, "retrying a read");
            self.metrics
                .upstream_retries
                .get_or_create(&crate::metrics::OperationLabels { operation: op.name })
                .inc();
            sleep(delay).await;
        }
    }

    /// One exchange behind the rate budget and the circuit breaker, measured.
    async fn guarded<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &Bytes,
        attempt: &Attempt<'_>,
    ) -> Result<T, UpstreamError> {
        let left = if attempt.may_wait {
            attempt.deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        // Token renewals and mutations may use the reserve that reads leave.
        let class = if op.read_only {
            Class::Read
        } else {
            Class::Write
        };
        // The caller key's share first, then the account's limit: a key past its share
        // is refused without touching what the others may use.
        if let Some(caller) = attempt.caller
            && let Some(per_minute) = caller.per_minute
        {
            let admission = self
                .budget
                .admit_share(caller.budget_key, per_minute, left)
                .await;
            self.wait_for(admission).await?;
        }
        let left = left.min(attempt.deadline.saturating_duration_since(Instant::now()));
        let admission = self.budget.admit(attempt.budget_key, class, left).await;
        self.wait_for(admission).await?;
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|wait| UpstreamError::CircuitOpen {
                retry_after: whole_seconds(wait),
            });
        self.metrics.breaker_state.set(self.breaker.state().gauge());
        let permit = permit?;
        let started = Instant::now();
        let result = match timeout_at(attempt.deadline, self.send(op, body, attempt)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout),
        };
        let healthy = !result.as_ref().is_err_and(UpstreamError::is_upstream_fault);
        permit.record(healthy);
        if healthy {
            *self.last_healthy.lock().expect("not poisoned") = Some(Instant::now());
        }
        self.metrics.breaker_state.set(self.breaker.state().gauge());
        let outcome = result.as_ref().map_or_else(UpstreamError::kind, |_| "ok");
        self.metrics
            .observe_upstream(op.name, outcome, started.elapsed());
        result
    }

    async fn wait_for(&self, admission: Admission) -> Result<(), UpstreamError> {
        match admission {
            Admission::Now => Ok(()),
            Admission::After(wait) => {
                self.metrics.rate_limit_waits.inc();
                sleep(wait).await;
                Ok(())
            }
            Admission::Refused(wait) => {
                self.metrics.rate_limit_rejections.inc();
                Err(UpstreamError::BudgetExhausted {
                    retry_after: whole_seconds(wait),
                })
            }
        }
    }

    /// One HTTP exchange. The span records the operation and outcome, never variables
    /// (they may hold the client secret) nor the token.
    async fn send<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &Bytes,
        attempt: &Attempt<'_>,
    ) -> Result<T, UpstreamError> {
        let span = tracing::info_span!(
            "upstream",
            upstream.operation = op.name,
            upstream.status = tracing::field::Empty
        );
        async {
            let mut request = self
                .http()
                .post(self.url.clone())
                .header(X_REQUEST_ID, attempt.request_id)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
            if let Some(bearer) = attempt.bearer {
                request = request.bearer_auth(bearer.expose());
            }
            if let Some(caller) = attempt.caller {
                self.metrics.key_upstream_call(&caller.key_id);
            }
            let response = request.send().await.map_err(answer::transport_error)?;
            let status = response.status();
            tracing::Span::current().record("upstream.status", status.as_u16());
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = answer::retry_after(response.headers());
                self.budget
                    .upstream_report(attempt.budget_key, Some(0), Some(retry_after))
                    .await;
                return Err(UpstreamError::RateLimited { retry_after });
            }
            let (remaining, reset) = answer::rate_report(response.headers());
            self.budget
                .upstream_report(attempt.budget_key, remaining, reset)
                .await;
            let body = answer::read_capped(response).await?;
            answer::decode(status, &body, op.root_field)
        }
        .instrument(span)
        .await
    }
}
