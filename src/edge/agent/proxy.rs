//! The proxy's commands: `test_command` and `reload_command` run through `sh -c` with the
//! version file in `EDGEPLANE_CONFIG_FILE`, under a deadline, their output quoted in a NACK.
//! With the nginx adapter they run on the rendered file instead (`nginx/`).

use super::Agent;
use crate::model::ConfigType;

/// Longest command output quoted in a NACK reason.
const OUTPUT_LIMIT: usize = 2048;

impl Agent {
    /// Runs one of the proxy's commands for a version; Err carries the reason for a NACK.
    pub(super) async fn run_hook(
        &self,
        what: &str,
        command: Option<&String>,
        configuration_id: &str,
        version: &str,
    ) -> Result<(), String> {
        let Some(command) = command else {
            return Ok(());
        };
        let mut child = tokio::process::Command::new("sh");
        child
            .arg("-c")
            .arg(command)
            .env(
                "EDGEPLANE_CONFIG_FILE",
                self.version_path(configuration_id, version),
            )
            .env("EDGEPLANE_CONFIG_ID", configuration_id)
            .env("EDGEPLANE_CONFIG_VERSION", version)
            .env("EDGEPLANE_STATE_DIR", &self.config.state_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(self.config.command_timeout, child.output()).await {
            Err(_) => {
                return Err(format!(
                    "{what} command timed out after {:?}",
                    self.config.command_timeout
                ));
            }
            Ok(Err(e)) => return Err(format!("{what} command could not start: {e}")),
            Ok(Ok(output)) => output,
        };
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(format!(
            "{what} command failed ({}): {}",
            output.status,
            tail(text.trim(), OUTPUT_LIMIT)
        ))
    }

    /// Test then reload `version`; on a failed reload, reload `restore` again.
    pub(super) async fn test_and_reload(
        &self,
        configuration_id: &str,
        version: &str,
        config_type: ConfigType,
        restore: Option<&str>,
    ) -> Result<(), String> {
        if let Some(nginx) = &self.nginx {
            return self
                .nginx_switch(nginx, configuration_id, Some((version, config_type)))
                .await;
        }
        self.run_hook(
            "test",
            self.config.test_command.as_ref(),
            configuration_id,
            version,
        )
        .await?;
        if let Err(reason) = self
            .run_hook(
                "reload",
                self.config.reload_command.as_ref(),
                configuration_id,
                version,
            )
            .await
        {
            let restored = match restore {
                None => String::from("no previous version to restore"),
                Some(previous) => match self
                    .run_hook(
                        "reload",
                        self.config.reload_command.as_ref(),
                        configuration_id,
                        previous,
                    )
                    .await
                {
                    Ok(()) => format!("reloaded {previous} again"),
                    Err(e) => format!("restoring {previous} failed too: {e}"),
                },
            };
            return Err(format!("{reason}; {restored}"));
        }
        Ok(())
    }
}

/// The last `limit` bytes of `text`, cut at a character boundary: the end of a command's
/// output is where the error usually is.
fn tail(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_cuts_at_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("aéb", 2), "b");
    }
}
