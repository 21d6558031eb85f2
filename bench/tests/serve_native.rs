//! `edgeserve-bench --serve-native`: the native handler alone, as
//! `bench/server_cpu.py --native` drives it: its address on stdout, the OIP
//! answer of `linear` over real HTTP, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// The server, killed if the test ends before it has exited.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn serves_linear_until_terminated() -> anyhow::Result<()> {
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_edgeserve-bench"))
            .arg("--serve-native")
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let child = &mut server.0;
    let mut address = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut address)?;
    let body = r#"{"inputs":[{"name":"x","shape":[2,1],"datatype":"FP32","data":[1.0,5.0]}]}"#;
    let mut stream = TcpStream::connect(address.trim())?;
    write!(
        stream,
        "POST /v2/models/linear/infer HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // y = 0.1·x + 0.3 in f32.
    assert!(
        response.ends_with(r#""shape":[2,1],"data":[0.4,0.8]}]}"#),
        "{response}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let exit = child.wait()?;
    assert!(exit.success(), "exited with {exit}");
    Ok(())
}
