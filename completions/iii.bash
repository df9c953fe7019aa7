_iii_completion() {
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words
    read -r -a words <<< "$line"
    [[ -z $line || $line == *[[:space:]] ]] && words+=("")
    local cword=$(( ${#words[@]} - 1 ))
    local cur=${words[cword]}
    local joined="${words[*]}"
    local IFS=$'\n'
    COMPREPLY=( $( env COMP_WORDS="$joined" COMP_CWORD=$cword \
                   _III_COMPLETE=complete_bash "$1" ) )
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local prefix=${cur%"${cur##*:}"} i
        for i in "${!COMPREPLY[@]}"; do
            COMPREPLY[i]=${COMPREPLY[i]#"$prefix"}
        done
    fi
    return 0
}

complete -o default -F _iii_completion iii
