//! Starting and stopping real instance processes.

mod common;

use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use augur_agent::{InstanceSpec, Instances, ProcessError};
use common::sample_spec;

#[tokio::test]
async fn t20_start_waits_for_health_and_stop_terminates() {
    let mut instances = Instances::new(sample_spec(10));
    let web1 = instances.start("web-1").await.unwrap();
    let web2 = instances.start("web-2").await.unwrap();
    assert_ne!(web1.port, web2.port);
    let range = instances.spec().port_range;
    assert!((range.0..=range.1).contains(&web1.port));
    assert!(instances.is_alive("web-1"));
    assert_eq!(instances.list(), [web1.clone(), web2.clone()]);

    // `{name}` reached the process: it answers with it.
    let response = web1.get("/").await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-instance"), Some("web-1"));

    let err = instances.start("web-1").await.unwrap_err();
    assert!(matches!(err, ProcessError::AlreadyExists { .. }), "{err}");

    let status = instances.stop("web-1").await.unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit: {status}");
    assert!(!instances.is_alive("web-1"));
    assert_eq!(instances.list(), [web2]);
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, web1.port)).is_err());
    let err = instances.stop("web-1").await.unwrap_err();
    assert_eq!(err.to_string(), "no instance named web-1");
    instances.stop_all().await.unwrap();
    assert!(instances.list().is_empty());
}

#[tokio::test]
async fn t20_command_that_exits_at_once_is_a_clear_error() {
    let spec = InstanceSpec {
        port_range: sample_spec(11).port_range,
        ..InstanceSpec::new(
            ["sh", "-c", "echo boom on {port} >&2; exit 3"]
                .map(String::from)
                .to_vec(),
        )
    };
    let mut instances = Instances::new(spec);
    let err = instances.start("bad").await.unwrap_err();
    let ProcessError::ExitedDuringStart {
        ref name,
        port,
        status,
    } = err
    else {
        panic!("unexpected error: {err}");
    };
    assert_eq!((name.as_str(), status.code()), ("bad", Some(3)));
    assert_eq!(
        err.to_string(),
        format!("instance bad (port {port}) exited during start with exit status: 3")
    );
    assert!(instances.list().is_empty());
}

#[tokio::test]
async fn t20_instance_that_never_serves_times_out_with_last_failure() {
    let spec = InstanceSpec {
        port_range: sample_spec(12).port_range,
        start_timeout: Duration::from_millis(300),
        ..InstanceSpec::new(["sleep", "30"].map(String::from).to_vec())
    };
    let mut instances = Instances::new(spec);
    let err = instances.start("mute").await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, ProcessError::StartTimeout { .. }),
        "{message}"
    );
    assert!(
        message.starts_with("instance mute (port ")
            && message.contains("not healthy after 300ms; last failure: connect to 127.0.0.1:")
            && message.contains("Connection refused"),
        "{message}"
    );

    let mut missing = Instances::new(InstanceSpec::new(vec!["/nonexistent/binary".into()]));
    let err = missing.start("x").await.unwrap_err();
    assert!(matches!(err, ProcessError::Spawn { .. }), "{err}");
    let err = missing.start("a b").await.unwrap_err();
    assert!(matches!(err, ProcessError::InvalidName { .. }), "{err}");
}

#[tokio::test]
async fn t20_stop_escalates_to_sigkill_after_grace() {
    let mut spec = sample_spec(13);
    spec.command.push("--ignore-sigterm".into());
    spec.stop_grace = Duration::from_millis(300);
    let mut instances = Instances::new(spec);
    instances.start("stubborn").await.unwrap();
    let status = instances.stop("stubborn").await.unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
}
