"""Seeds a fresh server for the contract run and prints an admin token.

One object of each kind, so that generated requests reach the handlers rather than stopping
at 404: a configuration with two versions (the second approved), an edge with a heartbeat
and metrics, and a deployment of that version to that edge. Their ids go into a
Schemathesis config file as fixed path parameters.

Usage: seed.py BASE_URL ADMIN_PASSWORD CONFIG_FILE
"""

import json
import sys
import urllib.request

BOUNDS_MS = [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 250.0,
             500.0, 1000.0]


def main():
    base, password, config_path = sys.argv[1], sys.argv[2], sys.argv[3]

    def call(method, path, body=None, token=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    token = call("POST", "/api/v1/authentication/login",
                 {"username": "admin", "password": password})["token"]
    content = {"pathPattern": "/contract/*", "ttl": 60, "cacheControl": "public, max-age=60"}
    configuration = call("POST", "/api/v1/configurations",
                         {"name": "contract", "type": "CacheRule", "content": content}, token)
    configuration_id = configuration["configurationId"]
    content["ttl"] = 120
    version = call("PUT", "/api/v1/configurations/" + configuration_id,
                   {"content": content, "changeDescription": "longer ttl"}, token)["version"]
    call("POST", "/api/v1/configurations/%s/approve" % configuration_id,
         {"notes": "contract"}, token)
    location_id = "contract-edge-1"
    call("POST", "/api/v1/edge-locations", {
        "locationId": location_id, "name": "Contract", "region": "Europe",
        "countryCode": "DE", "city": "Frankfurt", "endpoint": "http://127.0.0.1:9"}, token)
    call("POST", "/api/v1/edge-locations/%s/heartbeat" % location_id, {
        "health": {"isHealthy": True, "cpuUsage": 10.0},
        "activeConfigurations": {},
        "metrics": {
            "intervalSeconds": 10, "requests": 1000, "cacheHits": 900, "cacheMisses": 100,
            "errors4xx": 3, "errors5xx": 1, "bytesSent": 1000000, "bytesReceived": 20000,
            "latency": {"boundsMs": BOUNDS_MS,
                        "counts": [0, 0, 100, 400, 300, 100, 50, 30, 10, 5, 3, 1, 1, 0, 0, 0]},
        },
    }, token)
    # Deletions get objects of their own, so that the others stay for the rest of the run.
    doomed_configuration_id = call("POST", "/api/v1/configurations", {
        "name": "contract-doomed", "type": "CacheRule",
        "content": {"pathPattern": "/doomed/*", "ttl": 1, "cacheControl": "no-cache"}},
        token)["configurationId"]
    doomed_location_id = "contract-edge-2"
    call("POST", "/api/v1/edge-locations", {
        "locationId": doomed_location_id, "name": "Doomed", "region": "Europe",
        "countryCode": "SE", "endpoint": "http://127.0.0.1:9"}, token)
    deployment_id = call("POST", "/api/v1/deployments", {
        "configurationId": configuration_id, "strategy": "DirectDeployment",
        "targetLocations": [location_id]}, token)["deploymentId"]

    fixed = [
        (r"^/api/v1/(metrics/)?configurations/\{id\}", "deleteConfiguration",
         {"path.id": configuration_id, "path.version": version}),
        (r"^/api/v1/(metrics/)?edge-locations/\{id\}", "deleteEdgeLocation",
         {"path.id": location_id}),
        (r"^/api/v1/(metrics/)?deployments/\{id\}", None, {"path.id": deployment_id}),
        (r"^/api/v1/metrics/regions/", None, {"path.region": "Europe"}),
        (r"^/api/v1/schemas/", None, {"path.type": "CacheRule"}),
    ]
    doomed = [
        ("deleteConfiguration", {"path.id": doomed_configuration_id}),
        ("deleteEdgeLocation", {"path.id": doomed_location_id}),
    ]

    def pairs(parameters):
        return ", ".join("%s = %s" % (json.dumps(k), json.dumps(v))
                         for k, v in parameters.items())

    with open(config_path, "w") as config:
        for regex, excluded, parameters in fixed:
            config.write("[[operations]]\ninclude-path-regex = %s\n" % json.dumps(regex))
            if excluded:
                config.write("exclude-operation-id = %s\n" % json.dumps(excluded))
            config.write("parameters = { %s }\n\n" % pairs(parameters))
        for operation_id, parameters in doomed:
            config.write("[[operations]]\ninclude-operation-id = %s\nparameters = { %s }\n\n"
                         % (json.dumps(operation_id), pairs(parameters)))
    print(token)


if __name__ == "__main__":
    main()
