//! `edgeserve-operator`: reconciles `ModelDeployment` resources into edgeserve Deployments,
//! Services and HPAs. Only parses the command line and wires the library together.

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Kubernetes operator for edgeserve `ModelDeployment` resources.
#[derive(Debug, Parser)]
#[command(name = "edgeserve-operator", version, about)]
struct Cli {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "EDGESERVE_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info,kube=warn")]
    log: String,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "EDGESERVE_OPERATOR_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).context("--log")?;
    if cli.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    // In a pod: the service account; elsewhere: the current kubeconfig context.
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    edgeserve_operator::run(client, cli.namespace.as_deref())
        .await
        .context(
            "cannot list ModelDeployments; is the CRD installed? \
             (kubectl apply -f k8s/crds/modeldeployment.yaml)",
        )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
