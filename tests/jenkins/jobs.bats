#!/usr/bin/env bats
# Checks of the Jenkins jobs as code, with no Jenkins: jenkins/jobs.yaml renders
# with Jenkins Job Builder into the two pipeline jobs, and the Jenkinsfiles keep
# their contract (stages that only call make or scripts, JUnit, timeout,
# credentials only through withCredentials).
# Needs jenkins-jobs (pip install jenkins-job-builder) on PATH or in JENKINS_JOBS.

bats_require_minimum_version 1.5.0

setup_file() {
  REPO_ROOT="$(cd -- "${BATS_TEST_DIRNAME}/../.." && pwd)"
  export REPO_ROOT
  export BUILD_FILE="${REPO_ROOT}/jenkins/deployment/Jenkinsfile"
  export MANAGE_FILE="${REPO_ROOT}/jenkins/deployment/Jenkinsfile.manage"
  export OFFHOURS_FILE="${REPO_ROOT}/jenkins/deployment/Jenkinsfile.offhours"
  JENKINS_JOBS="${JENKINS_JOBS:-$(command -v jenkins-jobs || true)}"
  if [[ -z "${JENKINS_JOBS}" ]]; then
    echo "jenkins-jobs not found: run 'make venv-dev' (jenkins-job-builder)" >&3
    return 1
  fi
  export OUT="${BATS_FILE_TMPDIR}/jobs"
  "${JENKINS_JOBS}" -l error test --config-xml "${REPO_ROOT}/jenkins/jobs.yaml" -o "${OUT}" 2>/dev/null
}

# xml_values JOB XPATH: print the text of every element XPATH matches, one a line.
xml_values() {
  python3 - "${OUT}/$1/config.xml" "$2" <<'PY'
import sys
import xml.etree.ElementTree as ET

for element in ET.parse(sys.argv[1]).getroot().findall(sys.argv[2]):
    print(element.text or "")
PY
}

# sh_steps FILE: print the shell command of every sh step, joined across '+' lines.
sh_steps() {
  python3 - "$1" <<'PY'
import re
import sys

text = open(sys.argv[1]).read()
for match in re.finditer(r"\bsh\s*\(?\s*('[^']*'(?:\s*\+\s*'[^']*')*)", text):
    print("".join(re.findall(r"'([^']*)'", match.group(1))))
PY
}

@test "jobs.yaml renders three pipeline jobs from SCM with their Jenkinsfiles" {
  [ -f "${OUT}/ec2-creator-local-build/config.xml" ]
  [ -f "${OUT}/ec2-creator-local-manage/config.xml" ]
  [ -f "${OUT}/ec2-creator-local-offhours/config.xml" ]
  [ "$(ls "${OUT}" | wc -l)" -eq 3 ]
  run xml_values ec2-creator-local-build ./definition/scriptPath
  [ "${output}" = "jenkins/deployment/Jenkinsfile" ]
  run xml_values ec2-creator-local-manage ./definition/scriptPath
  [ "${output}" = "jenkins/deployment/Jenkinsfile.manage" ]
  run xml_values ec2-creator-local-offhours ./definition/scriptPath
  [ "${output}" = "jenkins/deployment/Jenkinsfile.offhours" ]
  for job in ec2-creator-local-build ec2-creator-local-manage ec2-creator-local-offhours; do
    grep -q 'class="org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition"' "${OUT}/${job}/config.xml"
    # The build workspace keeps its .venv between builds: never wiped.
    ! grep -q WipeWorkspace "${OUT}/${job}/config.xml"
    grep -q DisableConcurrentBuildsJobProperty "${OUT}/${job}/config.xml"
  done
}

@test "the manage job's ACTION dropdown is status, start, stop, restart in jobs.yaml and in the Jenkinsfile" {
  run xml_values ec2-creator-local-manage \
    ".//hudson.model.ChoiceParameterDefinition[name='ACTION']/choices/a/string"
  [ "${output}" = "$(printf 'status\nstart\nstop\nrestart')" ]
  grep -Eq "choice\(name: 'ACTION', choices: \['status', 'start', 'stop', 'restart'\]" "${MANAGE_FILE}"
}

@test "the manage job's TARGET dropdown is sandbox (first: the safe default), aws in jobs.yaml and in the Jenkinsfile" {
  run xml_values ec2-creator-local-manage \
    ".//hudson.model.ChoiceParameterDefinition[name='TARGET']/choices/a/string"
  [ "${output}" = "$(printf 'sandbox\naws')" ]
  grep -Eq "choice\(name: 'TARGET', choices: \['sandbox', 'aws'\]" "${MANAGE_FILE}"
}

@test "jobs.yaml and Jenkinsfile.manage declare the same string parameters and defaults" {
  run xml_values ec2-creator-local-manage \
    ".//hudson.model.StringParameterDefinition/name"
  local names="${output}" name default
  [ "${names}" = "$(printf 'BUILD_JOB\nAPP_DIR\nSERVER_HOST\nSERVER_PORT\nAPI_TOKEN_CREDENTIALS_ID')" ]
  for name in ${names}; do
    default="$(xml_values ec2-creator-local-manage \
      ".//hudson.model.StringParameterDefinition[name='${name}']/defaultValue")"
    echo "${name}=${default}"
    grep -Eq "string\(name: '${name}', defaultValue: '${default}'" "${MANAGE_FILE}"
  done
}

@test "the build Jenkinsfile: stages Checkout, Setup, Lint, Test, Validate; a timeout; JUnit" {
  run grep -Eo "stage\('[^']+'\)" "${BUILD_FILE}"
  [ "${output}" = "$(printf "%s\n" "stage('Checkout')" "stage('Setup')" "stage('Lint')" "stage('Test')" "stage('Validate')")" ]
  grep -Eq '^\s*timeout\(time: [0-9]+, unit:' "${BUILD_FILE}"
  grep -Eq "junit testResults: 'reports/" "${BUILD_FILE}"
  grep -q 'JUNIT_DIR' "${BUILD_FILE}"
  grep -q 'scripts/ensure_venv.sh' "${BUILD_FILE}"
  grep -q "sh 'scripts/system_deps.sh --check'" "${BUILD_FILE}"
}

@test "every sh step of the Jenkinsfiles is one call to make or to a script of the repository" {
  local file cmd n=0
  for file in "${BUILD_FILE}" "${MANAGE_FILE}" "${OFFHOURS_FILE}"; do
    while IFS= read -r cmd; do
      echo "${file##*/}: ${cmd}"
      [[ "${cmd}" =~ ^(make|scripts/[a-z_]+\.sh)( |$) ]]
      [[ "${cmd}" != *'&&'* && "${cmd}" != *';'* && "${cmd}" != *'|'* ]]
      n=$((n + 1))
    done < <(sh_steps "${file}")
  done
  [ "${n}" -eq 7 ]
}

@test "the manage job runs manage_server.sh on the build workspace, with the token from withCredentials" {
  run sh_steps "${MANAGE_FILE}"
  [ "${output}" = 'scripts/manage_server.sh "$ACTION" "${APP_DIR:-$WORKSPACE/../$BUILD_JOB}" "$SERVER_HOST" "$SERVER_PORT"' ]
  grep -Eq "withCredentials\(\[string\(credentialsId: params.API_TOKEN_CREDENTIALS_ID, variable: 'API_TOKEN'\)\]\)" \
    "${MANAGE_FILE}"
  grep -Eq '^\s*timeout\(time: [0-9]+, unit:' "${MANAGE_FILE}"
  # No token value and no user's home in the Jenkinsfiles or the jobs.
  ! grep -Ein 'API_TOKEN\s*=|/home/|/var/lib/jenkins|/Users/' "${BUILD_FILE}" "${MANAGE_FILE}" \
    "${REPO_ROOT}/jenkins/jobs.yaml"
  # Groovy never interpolates parameters into the shell command.
  ! grep -En '^\s*sh\s*\(?\s*"' "${BUILD_FILE}" "${MANAGE_FILE}"
}

@test "the manage job's shell command works as Jenkins runs it: APP_DIR defaults to the build job's workspace" {
  local ws="${BATS_TEST_TMPDIR}/workspace"
  mkdir -p "${ws}/ec2-creator-local-manage/scripts" "${ws}/ec2-creator-local-build/app"
  touch "${ws}/ec2-creator-local-build/app/main.py"
  # A stand-in manage_server.sh that prints its arguments.
  printf '#!/bin/bash\nprintf "[%%s]" "$@"\n' >"${ws}/ec2-creator-local-manage/scripts/manage_server.sh"
  chmod +x "${ws}/ec2-creator-local-manage/scripts/manage_server.sh"
  local cmd
  cmd="$(sh_steps "${MANAGE_FILE}")"
  cd "${ws}/ec2-creator-local-manage"
  run env ACTION=status APP_DIR= BUILD_JOB=ec2-creator-local-build SERVER_HOST=127.0.0.1 SERVER_PORT=8000 \
    WORKSPACE="${ws}/ec2-creator-local-manage" sh -c "${cmd}"
  [ "${status}" -eq 0 ]
  [ "${output}" = "[status][${ws}/ec2-creator-local-manage/../ec2-creator-local-build][127.0.0.1][8000]" ]
  run env ACTION=start APP_DIR=/srv/app BUILD_JOB=x SERVER_HOST=0.0.0.0 SERVER_PORT=8080 \
    WORKSPACE="${ws}/ec2-creator-local-manage" sh -c "${cmd}"
  [ "${output}" = "[start][/srv/app][0.0.0.0][8080]" ]
}

@test "the off-hours job: ACTION stop|start and TAG, bulk_action.sh with the token from withCredentials" {
  run xml_values ec2-creator-local-offhours ".//hudson.model.ChoiceParameterDefinition[name='ACTION']/choices/a/string"
  [ "${output}" = "$(printf 'stop\nstart')" ]
  grep -Eq "choice\(name: 'ACTION', choices: \['stop', 'start'\]" "${OFFHOURS_FILE}"
  run xml_values ec2-creator-local-offhours ".//hudson.model.StringParameterDefinition/name"
  local names="${output}" name default
  [ "${names}" = "$(printf 'TAG\nSERVER_URL\nAPI_TOKEN_CREDENTIALS_ID')" ]
  for name in ${names}; do
    default="$(xml_values ec2-creator-local-offhours ".//hudson.model.StringParameterDefinition[name='${name}']/defaultValue")"
    grep -Fq "string(name: '${name}', defaultValue: '${default}'" "${OFFHOURS_FILE}"
  done
  run sh_steps "${OFFHOURS_FILE}"
  [ "${output}" = 'scripts/bulk_action.sh "$ACTION" --tag "$TAG" --url "$SERVER_URL"' ]
  grep -Eq "withCredentials\(\[string\(credentialsId: params.API_TOKEN_CREDENTIALS_ID, variable: 'API_TOKEN'\)\]\)" \
    "${OFFHOURS_FILE}"
  grep -Eq '^\s*timeout\(time: [0-9]+, unit:' "${OFFHOURS_FILE}"
  # The nightly trigger is there, commented out: nothing runs on a schedule until someone decides it.
  grep -Eq "^    #   - timed: 'H 19 \* \* 1-5'" "${REPO_ROOT}/jenkins/jobs.yaml"
  ! grep -q TimerTrigger "${OUT}/ec2-creator-local-offhours/config.xml"
}
