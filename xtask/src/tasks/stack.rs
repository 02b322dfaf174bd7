//! Thin wrappers around the stack's lifecycle (`up`, `down`) as plans. `down` never removes
//! volumes: that is the clean family's job, behind its confirmations.

use anyhow::Result;

use crate::context::Ctx;
use crate::plan::Plan;

/// Starts the stack (or the named services); [`up`] then waits until they run and are healthy
/// (its own wait: Compose's `--wait` fails on a service with `healthcheck: {disable: true}`).
pub fn up_plan(ctx: &Ctx, services: &[String]) -> Result<Plan> {
    let docker = ctx.docker()?;
    let mut args = vec!["up", "--detach", "--remove-orphans"];
    args.extend(services.iter().map(String::as_str));
    let what = if services.is_empty() {
        format!("start stack {}, then wait for its health checks", ctx.stack.name)
    } else {
        format!("start {} of stack {}, then wait for health", services.join(", "), ctx.stack.name)
    };
    Ok(Plan::default().step(what, docker.compose(&ctx.stack, args)))
}

/// Removes the stack's containers and networks; every volume stays.
pub fn down_plan(ctx: &Ctx) -> Result<Plan> {
    let docker = ctx.docker()?;
    Ok(Plan::default().step(
        format!("remove the containers and networks of stack {} (volumes stay)", ctx.stack.name),
        docker.compose(&ctx.stack, ["down", "--remove-orphans"]),
    ))
}

pub fn up(ctx: &Ctx, services: &[String]) -> Result<()> {
    let docker = ctx.docker()?;
    up_plan(ctx, services)?.execute(docker, &ctx.ui)?;
    let started: Vec<String> = crate::engine::services::ps(docker, &ctx.stack)?
        .into_iter()
        .filter(|e| services.is_empty() || services.contains(&e.service))
        .map(|e| e.name)
        .collect();
    crate::engine::services::wait_until_up(docker, &started, &ctx.ui)
}

pub fn down(ctx: &Ctx) -> Result<()> {
    down_plan(ctx)?.execute(ctx.docker()?, &ctx.ui)
}
