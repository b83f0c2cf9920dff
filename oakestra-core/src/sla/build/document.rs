//! The descriptor's outer levels: the document, its applications and microservice lists.

use super::*;

impl Checker {
    pub(super) fn sla(&mut self, m: Map<String, Value>) -> Option<Sla> {
        let mut m = Fields::new(m);
        let customer_id = m.take("customerID");
        let customer_id = self.req_string("customerID", customer_id, "a string (the customer id)");
        let applications = m.take("applications");
        let applications = self.require(
            "applications",
            applications,
            "an array of application objects",
        );
        let applications =
            self.object_array("applications", applications, "an application", |c, _, m| {
                c.application(m)
            });
        let args = m.take("args");
        let args = self.string_array("args", args, "arguments");
        Some(Sla {
            sla_version: SlaVersion::V2,
            customer_id: customer_id?,
            applications: applications?,
            args,
            extra: m.into_extra(),
        })
    }

    pub(super) fn application(&mut self, m: Map<String, Value>) -> Option<Application> {
        let mut m = Fields::new(m);
        let application_id = m.take("applicationID");
        let application_id = self.string(
            "applicationID",
            application_id,
            "a string (an application id)",
        );
        let name = m.take("application_name");
        let name = self.name("application_name", name);
        let namespace = m.take("application_namespace");
        let namespace = self.name("application_namespace", namespace);
        let desc = m.take("application_desc");
        let desc = self.string("application_desc", desc, "a string (a description)");
        let microservices = m.take("microservices");
        let microservices = self.microservices(microservices);
        Some(Application {
            application_id,
            application_name: name?,
            application_namespace: namespace?,
            application_desc: desc,
            microservices: microservices?,
            extra: m.into_extra(),
        })
    }

    pub(super) fn microservice_list(&mut self, m: Map<String, Value>) -> Option<MicroserviceList> {
        let mut m = Fields::new(m);
        let microservices = m.take("microservices");
        let microservices = self.microservices(microservices);
        Some(MicroserviceList {
            microservices: microservices?,
            extra: m.into_extra(),
        })
    }

    /// The `microservices` array, including the check for repeated names.
    pub(super) fn microservices(&mut self, v: Option<Value>) -> Option<Vec<Microservice>> {
        let v = self.require(
            "microservices",
            v,
            "an array of microservice objects (it may be empty)",
        );
        let mut seen: Vec<(String, usize)> = Vec::new();
        self.object_array("microservices", v, "a microservice", |c, i, m| {
            if let Some(name) = m.get("microservice_name").and_then(Value::as_str)
                && is_valid_name(name)
            {
                if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                    let mut first_path = c.path.clone();
                    if let Some(last) = first_path.last_mut() {
                        *last = Seg::Index(*first);
                    }
                    let first_path = render(&first_path, None);
                    c.report(
                        Some("microservice_name"),
                        format!(
                            "\"{name}\" is already the name of {first_path}; microservice names must be unique within an application"
                        ),
                    );
                } else {
                    seen.push((name.to_owned(), i));
                }
            }
            c.microservice(m)
        })
    }
}
