//! End-to-end tests live in `tests/`. This library starts the whole fleet:
//! a private Redis and the four real service binaries, each on a free port.

use allies_testkit::{RedisServer, ServiceProcess};

pub const SERVICES: [&str; 4] = ["guardian", "timesquare", "command", "projector"];

pub struct Fleet {
    pub redis: RedisServer,
    pub services: Vec<ServiceProcess>,
}

impl Fleet {
    /// Starts Redis and every service with `extra_env`.
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut services: Vec<ServiceProcess> = Vec::new();
        // Guardian first: the others verify tokens against its JWKS.
        for name in SERVICES {
            let guardian = services.first().map(|g| g.endpoint()).unwrap_or_default();
            let mut env = vec![("REDIS_URL", url.as_str()), ("SHUTDOWN_GRACE_SECS", "5"), ("GUARDIAN_URL", &guardian)];
            env.extend_from_slice(extra_env);
            services.push(ServiceProcess::start(name, &format!("{}_LISTEN_ADDR", name.to_uppercase()), &env));
        }
        Self { redis, services }
    }

    pub fn service(&self, name: &str) -> &ServiceProcess {
        self.services.iter().find(|s| s.name == name).expect("service in fleet")
    }

    pub fn service_mut(&mut self, name: &str) -> &mut ServiceProcess {
        self.services.iter_mut().find(|s| s.name == name).expect("service in fleet")
    }

    pub fn endpoint(&self, name: &str) -> String {
        self.service(name).endpoint()
    }
}
