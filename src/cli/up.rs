//! `incident-lab up`: one arm's world until Ctrl-C.

use super::*;

/// `up`: one arm's world until Ctrl-C (exit 0 when stopped that way, everything cleaned up).
pub(super) async fn up(args: UpArgs) -> Result<(), Failure> {
    let path = &args.scenario;
    let scenario = crate::model::Scenario::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    let arm = match &args.arm {
        Some(name) => scenario.arms.iter().find(|a| &a.name == name),
        None => scenario
            .arms
            .iter()
            .find(|a| a.name == "all-on")
            .or(scenario.arms.first()),
    }
    .ok_or_else(|| unknown_arm(path, &scenario, args.arm.as_deref().unwrap_or("all-on")))?;
    let secrets = secrets_from_env(true)?;
    let service_bin = crate::service_proc::find_binary().map_err(Failure::Infrastructure)?;
    let (server, template) = provision_and_seed(&scenario, &args.backend).await?;
    let options = crate::matrix::stack::StackOptions {
        service_bin: &service_bin,
        listen: args.listen,
        out: &args.out,
        secrets,
        fakes: args.fakes.clone(),
    };
    let result = crate::matrix::stack::up(&scenario, &server, &template, arm, &options).await;
    server.shutdown().await;
    result.map_err(Failure::Infrastructure)?;
    println!("stopped: cleaned up");
    Ok(())
}
