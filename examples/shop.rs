//! A user's own binary on `steadfast::cli`: its agents and pipeline registered, steadfast's
//! commands for them, and a command of its own.
//!
//! ```text
//! cargo run --example shop -- submit --order A-1 --amount 40     # queue an order
//! cargo run --example shop -- submit --order A-2 --amount 4000   # over the limit: review
//! cargo run --example shop -- work                               # run the workers until idle
//! cargo run --example shop -- runs list                          # every run
//! cargo run --example shop -- review list                        # what waits for a person
//! cargo run --example shop -- review approve <RUN> --note "known customer"
//! cargo run --example shop -- graph orders                       # the pipeline, in Mermaid
//! ```
//!
//! The pipeline `orders`: `check` (a permanent fault for a non-positive amount: dead letter),
//! `charge` (over 1,000 asks a person first; the charge is a journaled effect, so a retry or a
//! crash never charges twice), `ship` (waits for the warehouse's `packed` signal).

use std::process::ExitCode;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use steadfast::cli::{self, App, CliError, Session};
use steadfast::pipeline::Pipeline;
use steadfast::prelude::*;

/// An order as it is submitted.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Order {
    /// The order's id (`A-1`).
    id: String,
    /// Its amount, in cents.
    amount: i64,
}

/// A charged order.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Charged {
    order: Order,
    /// The payment provider's reference.
    payment: String,
}

/// A shipped order.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Shipped {
    order: String,
    payment: String,
    /// The parcel, from the warehouse's `packed` signal.
    parcel: String,
}

struct Check;

#[async_trait]
impl Agent for Check {
    type Input = Order;
    type Output = Order;
    fn name(&self) -> &str {
        "check"
    }
    async fn run(&self, _: &mut Context, order: Order) -> Result<Outcome<Order>, AgentError> {
        if order.amount <= 0 {
            return Err(AgentError::permanent(format!(
                "order {} has amount {}: nothing to charge",
                order.id, order.amount
            )));
        }
        Ok(Outcome::Done(order))
    }
}

struct Charge;

#[async_trait]
impl Agent for Charge {
    type Input = Order;
    type Output = Charged;
    fn name(&self) -> &str {
        "charge"
    }
    async fn run(&self, ctx: &mut Context, order: Order) -> Result<Outcome<Charged>, AgentError> {
        if order.amount > 1_000 && ctx.review_note().is_none() {
            return Ok(Outcome::Review(format!(
                "order {} charges {}, above the 1000 limit: approve with a note",
                order.id, order.amount
            )));
        }
        // Journaled: recorded once, returned as recorded on any later attempt.
        let id = order.id.clone();
        let payment: String =
            ctx.effect("charge card", |key| async move {
                Ok(format!("pay-{id}-{}", key.as_str().len()))
            })
            .await?;
        Ok(Outcome::Done(Charged { order, payment }))
    }
}

struct Ship;

#[async_trait]
impl Agent for Ship {
    type Input = Charged;
    type Output = Shipped;
    fn name(&self) -> &str {
        "ship"
    }
    async fn run(
        &self,
        ctx: &mut Context,
        charged: Charged,
    ) -> Result<Outcome<Shipped>, AgentError> {
        let Some(packed) = ctx.signal() else {
            return Ok(Outcome::Wait(WaitFor::signal("packed")));
        };
        let parcel = packed["parcel"].as_str().unwrap_or("unknown").to_owned();
        Ok(Outcome::Done(Shipped { order: charged.order.id, payment: charged.payment, parcel }))
    }
}

/// The pipeline this binary registers.
fn orders() -> Pipeline<Order, Shipped> {
    Pipeline::new("orders").then(Check).then(Charge).then(Ship)
}

/// This binary's own commands, beside steadfast's.
#[derive(Debug, clap::Subcommand)]
enum Shop {
    /// Queue an order (an order id is taken once: submitting it again does nothing new).
    Submit {
        /// The order's id.
        #[arg(long)]
        order: String,
        /// Its amount, in cents.
        #[arg(long, allow_hyphen_values = true)]
        amount: i64,
    },
}

async fn submit(session: &Session, order: Order) -> Result<(), CliError> {
    let runtime = session
        .runtime(session.open_store()?)
        .build()
        .map_err(|e| CliError::refused(e.to_string()))?;
    let submitted =
        runtime.submit("orders", order).await.map_err(|e| CliError::refused(e.to_string()))?;
    if session.json() {
        let shown = serde_json::json!({"id": submitted.id, "created": submitted.created});
        cli::say(format_args!("{shown}"))
    } else if submitted.created {
        cli::say(format_args!("queued {} (run `shop work` to process it)", submitted.id))
    } else {
        cli::say(format_args!("already submitted as {}", submitted.id))
    }
}

fn main() -> ExitCode {
    App::new("shop")
        .about("Orders, checked, charged and shipped by steadfast agents.")
        .setup(|runtime, _session| runtime.pipeline(orders()))
        .run_with(|command, session| match command {
            Shop::Submit { order, amount } => {
                session.block_on(submit(session, Order { id: order, amount }))
            }
        })
}
