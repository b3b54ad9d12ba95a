//! The README's main command (`./demo` runs it after installing what it needs): a local control
//! plane, two namespace target hosts with sshd and the PSRP peer, the operator's own binary, and the
//! manifests of `examples/`, pointed at those hosts. It waits for the sessions to be Ready and the
//! jobs to finish, shows `kubectl get pssessions,psjobs` and each job's output, then keeps running
//! (showing the table every 30 s) until Ctrl-C, or ends after one pass with `--once`.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Parser;
use e2e::{
    ControlPlane, ControlPlaneOptions,
    crds::install_crds,
    hosts::{Host, TargetHosts},
    operator::{OperatorProcess, create_host_secrets, eventually},
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, api::PostParams};
use pssession_operator::api::{JobState, PSJob};
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "Runs the operator on a local control plane against two local target hosts")]
struct Cli {
    /// End after one pass instead of running until interrupted.
    #[arg(long)]
    once: bool,
    /// The namespace the examples go to.
    #[arg(long, default_value = "demo")]
    namespace: String,
}

const NAMESPACE_WAIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();

    say("starting a control plane (etcd, kube-apiserver, kube-controller-manager)");
    let control_plane = ControlPlane::start(ControlPlaneOptions::from_env()).await?;
    install_crds(&control_plane).await?;
    let client = control_plane.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(cli.namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the namespace")?;

    say("starting two target hosts (network namespaces with sshd and the PowerShell Remoting peer)");
    let hosts = TargetHosts::up(2).await?;
    create_host_secrets(
        &Api::<Secret>::namespaced(client.clone(), &cli.namespace),
        &hosts,
        "demo",
    )
    .await?;

    say("starting the operator");
    let operator = OperatorProcess::start(&control_plane, &cli.namespace, &[]).await?;

    let manifests = examples(&hosts, &client, &cli.namespace).await?;
    say("applying examples/ (pointed at the local hosts)");
    let applied = control_plane
        .kubectl_in_with_stdin(&cli.namespace, &["apply", "-f", "-"], &manifests)
        .await?;
    print!("{}", applied.ok()?);

    say("waiting for the sessions to be Ready");
    let waited = control_plane
        .kubectl_in(
            &cli.namespace,
            &[
                "wait",
                "--for=condition=Ready",
                "pssession/linux01",
                "pssession/linux02",
                "pssession/web01",
                "--timeout=120s",
            ],
        )
        .await?;
    print!("{}", waited.stdout);
    if !waited.success() {
        eprintln!("{}\noperator log: {}", waited.stderr, operator.log.display());
        bail!("the sessions did not become Ready");
    }

    say("waiting for the jobs to finish");
    let jobs: Api<PSJob> = Api::namespaced(client.clone(), &cli.namespace);
    eventually("all jobs finished", NAMESPACE_WAIT, || {
        let jobs = jobs.clone();
        async move {
            let list = jobs.list(&Default::default()).await?;
            let done = list.items.iter().all(|j| {
                matches!(
                    j.status.as_ref().and_then(|s| s.state),
                    Some(JobState::Completed | JobState::Failed | JobState::Stopped)
                )
            });
            Ok((done && !list.items.is_empty()).then_some(()))
        }
    })
    .await?;

    show(&control_plane, &cli.namespace).await?;
    let mut list = jobs.list(&Default::default()).await?.items;
    list.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    for job in list {
        let name = job.metadata.name.clone().unwrap_or_default();
        let status = job.status.unwrap_or_default();
        println!(
            "\n--- output of psjob/{name} ({:?})",
            status.state.unwrap_or(JobState::Queued)
        );
        print!("{}", status.output.unwrap_or_default());
        if let Some(errors) = status.streams.and_then(|s| s.error) {
            print!("[error stream]\n{errors}");
        }
    }
    println!(
        "\nKUBECONFIG={} kubectl -n {} get pss,psjobs    # to look yourself\noperator log: {}",
        control_plane.kubeconfig_path().display(),
        cli.namespace,
        operator.log.display()
    );

    if !cli.once {
        say("running until Ctrl-C; the table again every 30 s");
        let mut term = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tokio::time::sleep(Duration::from_secs(30)) => show(&control_plane, &cli.namespace).await?,
            }
        }
    }
    say("stopping: operator, hosts, control plane");
    drop(operator);
    drop(hosts);
    control_plane.stop();
    Ok(())
}

fn say(what: &str) {
    println!("\n==> {what}");
}

async fn show(control_plane: &ControlPlane, namespace: &str) -> Result<()> {
    let table = control_plane
        .kubectl_in(namespace, &["get", "pssessions,psjobs"])
        .await?;
    println!();
    print!("{}", table.ok()?);
    Ok(())
}

/// The examples as a user would apply them, with what only this machine knows filled in: the SSH
/// session goes to host 1 with the harness's key and known_hosts, a second one (password) to host 2;
/// the WSMan session web01 goes to host 1's WS-Management listener (plain HTTP, NTLM-sealed, so its
/// CA is left out) as the password user, and so does web02-maintenance, which is left
/// disconnected there. The attached WSMan example names a shell made elsewhere, which does not
/// exist here, and is left out.
async fn examples(hosts: &TargetHosts, client: &kube::Client, namespace: &str) -> Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let key = secrets.get("demo-key").await?;
    let password = secrets.get("demo-password").await?;
    let known_hosts = secrets.get("demo-known-hosts").await?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(file)?;
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(&text).with_context(|| format!("parsing {}", file.display()))?;
        for mut doc in documents.into_iter().filter(|d| !d.is_null()) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            match (kind.as_str(), name.as_str()) {
                ("Secret", "linux01-ssh") => {
                    replace_data(&mut doc, serde_json::to_value(&key.data)?);
                }
                ("Secret", "linux01-known-hosts") => {
                    replace_data(&mut doc, serde_json::to_value(&known_hosts.data)?);
                }
                ("PSSession", "linux01") => {
                    point_at(&mut doc, hosts.host(0));
                    let mut second = doc.clone();
                    second["metadata"]["name"] = "linux02".into();
                    point_at(&mut second, hosts.host(1));
                    second["spec"]["authentication"] = "Password".into();
                    second["spec"]["credentialsSecretRef"]["name"] = "demo-password".into();
                    out.push(second);
                }
                ("Secret", "web01-winrm") => {
                    replace_data(&mut doc, serde_json::to_value(&password.data)?);
                }
                ("PSSession", "web01" | "web02-maintenance") => {
                    let host = hosts.host(0);
                    doc["spec"]["computerName"] = host.address.clone().into();
                    doc["spec"]["port"] = host.wsman_port.unwrap_or(5985).into();
                    doc["spec"]["useSSL"] = false.into();
                    if let Some(spec) = doc["spec"].as_object_mut() {
                        spec.remove("caSecretRef");
                    }
                }
                ("Secret", "corp-root-ca") => {
                    println!(
                        "    (skipping Secret/corp-root-ca from {}: the test hosts' WSMan listener is plain HTTP)",
                        file.display()
                    );
                    continue;
                }
                ("PSJob", _) | ("Secret", _) => {}
                _ => {
                    println!(
                        "    (skipping {kind}/{name} from {}: it adopts a shell made elsewhere by its id, and there is none here)",
                        file.display()
                    );
                    continue;
                }
            }
            out.push(doc);
        }
    }
    let yaml: Vec<String> = out
        .iter()
        .map(|doc| serde_saphyr::to_string(doc).context("rendering a manifest"))
        .collect::<Result<_>>()?;
    Ok(yaml.join("---\n"))
}

/// The example's placeholder `stringData` gives way to the harness's real key material.
fn replace_data(doc: &mut Value, data: Value) {
    if let Some(object) = doc.as_object_mut() {
        object.remove("stringData");
        object.insert("data".into(), data);
    }
}

fn point_at(doc: &mut Value, host: &Host) {
    doc["spec"]["computerName"] = host.address.clone().into();
    doc["spec"]["port"] = host.port.into();
}
